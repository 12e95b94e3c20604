import org.jetbrains.kotlin.gradle.dsl.JvmTarget

plugins {
    alias(libs.plugins.android.application)
    alias(libs.plugins.kotlin.android)
}

android {
    namespace = "org.memlora.demo"
    // Versions: gradle/libs.versions.toml, which ./build.sh android-check reads as well.
    compileSdk = libs.versions.compile.sdk.get().toInt()

    defaultConfig {
        applicationId = "org.memlora.demo"
        minSdk = libs.versions.min.sdk.get().toInt()
        targetSdk = libs.versions.target.sdk.get().toInt()
        versionCode = libs.versions.version.code.get().toInt()
        versionName = libs.versions.version.name.get()
        ndk { abiFilters += "arm64-v8a" }
        // The runtime versions linked into the APK; a bundle exported with another ExecuTorch is refused at load.
        buildConfigField("String", "EXECUTORCH_VERSION", "\"${libs.versions.executorch.get()}\"")
        buildConfigField("String", "ONNXRUNTIME_VERSION", "\"${libs.versions.onnxruntime.get()}\"")
    }

    buildFeatures { buildConfig = true }

    compileOptions {
        sourceCompatibility = JavaVersion.toVersion(libs.versions.jvm.target.get())
        targetCompatibility = JavaVersion.toVersion(libs.versions.jvm.target.get())
    }

    // sqlite-jdbc on Android loads libsqlitejdbc.so with System.loadLibrary: its jar carries the arm64 build under
    // org/sqlite/native/Linux-Android/aarch64, which must be packaged as a JNI library (the driver's USAGE.md).
    sourceSets["main"].jniLibs.srcDir(layout.buildDirectory.dir("generated/sqlite-jni"))
    packaging {
        resources.excludes += "org/sqlite/native/**" // the desktop builds inside the jar are dead weight on a phone
    }
}

kotlin {
    compilerOptions { jvmTarget.set(JvmTarget.fromTarget(libs.versions.jvm.target.get())) }
}

val sqliteJni: Configuration by configurations.creating

dependencies {
    implementation(project(":core"))
    implementation(libs.executorch.android)
    implementation(libs.onnxruntime.android)
    sqliteJni(libs.sqlite.jdbc) { isTransitive = false }
}

val extractSqliteJni by tasks.registering(Copy::class) {
    from({ zipTree(sqliteJni.singleFile) }) {
        include("org/sqlite/native/Linux-Android/aarch64/libsqlitejdbc.so")
        eachFile { path = "arm64-v8a/$name" }
        includeEmptyDirs = false
    }
    into(layout.buildDirectory.dir("generated/sqlite-jni"))
}
tasks.named("preBuild") { dependsOn(extractSqliteJni) }
