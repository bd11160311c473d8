import PacketDecoding

/// libFuzzer entry point for the frame decoder, checksum verification and defragmenter.
/// The first input byte picks the link type and whether the snaplen "cut" the frame;
/// the rest is the frame. Built with contrib/fuzz/run.sh (-sanitize=fuzzer -DFUZZING).
@_cdecl("LLVMFuzzerTestOneInput")
public func decoderFuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 1 else { return 0 }
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let selector = input[0]
    let links = LinkType.allCases
    let decoder = PacketDecoder(linkType: links[Int(selector & 0x0f) % links.count].rawValue)
    let frame = UnsafeRawBufferPointer(rebasing: input[1...])
    let wire = selector & 0x80 != 0 ? frame.count + 1500 : frame.count
    var p = DecodedPacket()
    if decoder.decode(frame, originalLength: wire, into: &p) == nil {
        _ = Checksum.verifyTransport(p, in: frame)
        if p.fragment != nil {
            let defrag = Defragmenter()
            _ = defrag.add(p, frame: frame, at: 1)
            _ = defrag.add(p, frame: frame, at: 2)
        }
    }
    return 0
}

#if FUZZING
/// SwiftPM links an executable's entry point as `<target>_main`; hand control to libFuzzer's driver.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt) -> CInt

@_cdecl("DecoderFuzzer_main")
func decoderFuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    var count = argc
    var args: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = argv
    return LLVMFuzzerRunDriver(&count, &args, decoderFuzzOne)
}
#else
/// Without libFuzzer: replays corpus files given as arguments (a regression check).
@main
struct DecoderFuzzerReplay {
    static func main() {
        var count = 0
        for path in CommandLine.arguments.dropFirst() {
            guard let f = fopen(path, "rb") else { continue }
            var bytes: [UInt8] = []
            var buf = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = fread(&buf, 1, buf.count, f)
                if n <= 0 { break }
                bytes += buf[0..<n]
            }
            fclose(f)
            if !bytes.isEmpty { _ = bytes.withUnsafeBufferPointer { decoderFuzzOne($0.baseAddress!, $0.count) } }
            count += 1
        }
        print("replayed \(count) inputs")
    }
}
#endif

#if canImport(Glibc)
import Glibc
#endif
