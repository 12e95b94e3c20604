// memlora demo app: the memory assistant on a phone, calling an exported memlora bundle.
//   :core  plain JVM (Java 11) module: manifest, prompts + chat template, op-output parsing, the SQLite memory store,
//          retrieval ranking, the memory cycle. Tested on the JDK against the Python side's shared test vectors
//          (../build.sh android-test). No Android classes.
//   :app   the Android app (Kotlin): chat, memories, settings, and BenchmarkActivity for memlora-profile --target adb.
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}
dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}
rootProject.name = "memlora-demo"
include(":core", ":app")
