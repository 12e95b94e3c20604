// Plain JVM module shared by the app and the JDK tests (no Android classes). Java 11 bytecode: runs on the JDK and,
// through D8, on Android (minSdk 26 for java.time / java.nio.file).
plugins {
    `java-library`
}

java {
    sourceCompatibility = JavaVersion.VERSION_11
    targetCompatibility = JavaVersion.VERSION_11
}

dependencies {
    // The memory store is JDBC over SQLite: xerial sqlite-jdbc on the JDK and on the phone (the app packages the
    // driver's Android arm64 native library, see app/build.gradle.kts).
    api(libs.sqlite.jdbc)
    testImplementation(libs.junit)
}

tasks.test {
    // The shared test vectors: `python -m runtimes.memory.vectors build/android-core/vectors` from the repository root
    // (../build.sh android-test writes them and runs these same tests with javac + JUnit, no Gradle needed).
    systemProperty("memlora.vectors", rootProject.file("../build/android-core/vectors").absolutePath)
}
