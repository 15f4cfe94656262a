// swift-tools-version:6.0
// The Swift bindings of the unibus client SDK.
//
// Sources/Unibus/Unibus.swift and Sources/UnibusFFI/include/{UnibusFFI.h,module.modulemap} are
// generated, not checked in: bindings/swift/generate.sh writes them from the release library
// (which it builds into target/release, where the linker setting below finds it). Then:
//   cd bindings/swift && swift build && swift test
// (the tests need membershipd and nats-server, like the Kotlin and Python ones).
// scripts/swift-test.sh builds and tests this package on Linux with Swift 6.0 on every run of
// scripts/test.sh; it has not been built for Apple platforms here.
import PackageDescription

let package = Package(
    name: "Unibus",
    platforms: [.macOS(.v12), .iOS(.v15)],
    products: [
        .library(name: "Unibus", targets: ["Unibus"]),
    ],
    targets: [
        // The C declarations of the Rust library's exported symbols.
        .target(
            name: "UnibusFFI",
            path: "Sources/UnibusFFI",
            linkerSettings: [
                .linkedLibrary("unibus_ffi"),
                .unsafeFlags(["-L../../target/release"]),
            ]
        ),
        .target(name: "Unibus", dependencies: ["UnibusFFI"], path: "Sources/Unibus"),
        .testTarget(name: "UnibusTests", dependencies: ["Unibus"], path: "Tests/UnibusTests"),
    ],
    // Swift 6 language mode for every target: complete strict-concurrency checking.
    swiftLanguageModes: [.v6]
)
