// swift-tools-version:6.1
import PackageDescription

// Targets depend downwards only: ConntrackCore <- KernelConntrack <- ctsync.
// C libraries are reached through system-library targets (pkg-config) and one
// small shim with prefixed symbols for macros and constants Swift cannot import.
/// The per-packet path crosses ConntrackCore, PacketDecoding and ConntrackModel (tuples,
/// addresses, checksums); cross-module optimisation lets the compiler inline across them.
let crossModule: [SwiftSetting] = [.unsafeFlags(["-cross-module-optimization"], .when(configuration: .release))]

let package = Package(
    name: "ctsync",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "ctsync", targets: ["ctsync"]),
        .library(name: "ConntrackCore", targets: ["ConntrackCore"]),
        .library(name: "KernelConntrack", targets: ["KernelConntrack"]),
        .library(name: "PacketDecoding", targets: ["PacketDecoding"]),
        .library(name: "PacketCapture", targets: ["PacketCapture"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
    ],
    targets: [
        .target(name: "ConntrackCore", swiftSettings: crossModule),
        .target(name: "PacketDecoding", dependencies: ["ConntrackCore"], swiftSettings: crossModule),
        .target(name: "PacketCapture", dependencies: ["CPcap"], swiftSettings: crossModule),
        .target(name: "ConntrackModel", dependencies: ["ConntrackCore", "PacketDecoding"], swiftSettings: crossModule),
        .target(name: "Reconcile", dependencies: ["ConntrackCore"]),
        // Replication frames (ctsync's, authenticated) and conntrackd's sync messages: pure codecs.
        .target(name: "ReplicationProtocol", dependencies: ["ConntrackCore"], swiftSettings: crossModule),
        .systemLibrary(
            name: "CNetfilterConntrack",
            pkgConfig: "libnetfilter_conntrack",
            providers: [.apt(["libnetfilter-conntrack-dev", "libmnl-dev"])]
        ),
        .systemLibrary(
            name: "CPcap",
            pkgConfig: "libpcap",
            providers: [.apt(["libpcap-dev"])]
        ),
        // libcrypto for HMAC-SHA-256 at hardware speed (SHA extensions) on replication frames.
        .systemLibrary(
            name: "CLibcrypto",
            pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"])]
        ),
        .target(name: "CConntrackShim", cSettings: [.define("_GNU_SOURCE")]),
        .target(
            name: "KernelConntrack",
            dependencies: [
                "ConntrackCore", "CNetfilterConntrack", "CConntrackShim",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: crossModule
        ),
        // The replication daemons: authenticated TCP sessions (SwiftNIO), the standby's
        // external cache and its commit, the control socket.
        .target(
            name: "Replication",
            dependencies: [
                "ConntrackCore", "KernelConntrack", "ReplicationProtocol", "CLibcrypto",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "ctsync",
            dependencies: [
                "ConntrackCore", "KernelConntrack", "PacketDecoding", "PacketCapture", "ConntrackModel", "Reconcile", "Replication",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // libFuzzer target for the decoder (contrib/fuzz/run.sh); a corpus replayer otherwise.
        .executableTarget(name: "DecoderFuzzer", dependencies: ["PacketDecoding"]),
        .testTarget(name: "ConntrackCoreTests", dependencies: ["ConntrackCore"]),
        .testTarget(name: "KernelConntrackTests", dependencies: ["KernelConntrack", "ConntrackCore"]),
        .testTarget(name: "ConntrackModelTests", dependencies: ["ConntrackModel", "ConntrackCore"]),
        .testTarget(name: "ReconcileTests", dependencies: ["Reconcile", "ConntrackCore"]),
        .testTarget(name: "ReplicationProtocolTests", dependencies: ["ReplicationProtocol", "ConntrackCore"]),
        .testTarget(name: "ReplicationTests", dependencies: ["Replication", "ReplicationProtocol", "KernelConntrack", "ConntrackCore"]),
        .testTarget(name: "PacketDecodingTests", dependencies: ["PacketDecoding", "PacketCapture", "ConntrackCore"]),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["KernelConntrack", "ConntrackCore"],
            exclude: ["Fixtures"]     // read by path at run time (captures, goldens, scenarios)
        ),
    ],
    swiftLanguageModes: [.v6]
)
