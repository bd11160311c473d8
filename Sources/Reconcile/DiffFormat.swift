import ConntrackCore

/// `ctsync diff` output: a summary by class, then one block per divergence (text), or
/// one JSON object per divergence after a summary object (`-o json`).
public enum DiffFormat {
    public static func text(_ r: DiffReport, a: SideContext, b: SideContext, color: Bool) -> String {
        func paint(_ s: String, _ code: String) -> String { color ? "\u{1b}[\(code)m\(s)\u{1b}[0m" : s }
        var out = "a = \(a.name) (\(r.countA) entries), b = \(b.name) (\(r.countB) entries): \(r.matched) matched, "
        out += r.divergences.isEmpty ? "no divergence\n" : "\(r.divergences.count) divergences\n"
        for (k, n) in r.byClass { out += "  \(k.rawValue): \(n)\n" }
        let options = TextFormatOptions(showLayer3: true)
        func line(_ e: ConntrackEntry) -> String {
            var bytes: [UInt8] = []
            ConntrackText.write(e, options: options, to: &bytes)
            return String(decoding: bytes, as: UTF8.self)
        }
        for d in r.divergences {
            out += "\n" + paint("[\(d.classes.map(\.rawValue).joined(separator: ","))]", "1;33") + "\n"
            if let x = d.a { out += paint("a: ", "31") + line(x) + "\n" }
            if let y = d.b { out += paint("b: ", "32") + line(y) + "\n" }
            for (name, x, code) in [("a", d.expectationA, "31"), ("b", d.expectationB, "32")] {
                guard let x else { continue }
                var bytes: [UInt8] = []
                ConntrackText.write(x, options: options, to: &bytes)
                out += paint(name + ": ", code) + "expect " + String(decoding: bytes, as: UTF8.self) + "\n"
            }
            out += "cause: \(d.cause.text)\n"
        }
        return out
    }

    public static func json(_ r: DiffReport, a: SideContext, b: SideContext) -> String {
        var out: [UInt8] = []
        func str(_ s: String) { ConntrackJSON.writeString(s, to: &out) }
        out.append(contentsOf: Array("{\"v\":1,\"kind\":\"summary\",\"a\":".utf8)); str(a.name)
        out.append(contentsOf: Array(",\"b\":".utf8)); str(b.name)
        out.append(contentsOf: Array(",\"count_a\":\(r.countA),\"count_b\":\(r.countB),\"matched\":\(r.matched),\"divergences\":\(r.divergences.count),\"by_class\":{".utf8))
        for (i, (k, n)) in r.byClass.enumerated() {
            if i > 0 { out.append(44) }
            str(k.rawValue)
            out.append(contentsOf: Array(":\(n)".utf8))
        }
        out.append(contentsOf: Array("}}\n".utf8))
        for d in r.divergences {
            write(d, to: &out)
            out.append(10)
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// One divergence as a JSON object (`"kind":"divergence"`).
    public static func jsonObject(_ d: Divergence) -> String {
        var out: [UInt8] = []
        write(d, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    static func write(_ d: Divergence, to out: inout [UInt8]) {
        func str(_ s: String) { ConntrackJSON.writeString(s, to: &out) }
        out.append(contentsOf: Array("{\"v\":1,\"kind\":\"divergence\",\"classes\":[".utf8))
        for (i, k) in d.classes.enumerated() { if i > 0 { out.append(44) }; str(k.rawValue) }
        out.append(contentsOf: Array("],\"cause\":".utf8)); str(d.cause.code)
        out.append(contentsOf: Array(",\"explanation\":".utf8)); str(d.cause.text)
        for (name, e) in [("a", d.a), ("b", d.b)] {
            guard let e else { continue }
            out.append(contentsOf: Array(",\"\(name)\":".utf8))
            ConntrackJSON.write(e, to: &out)
        }
        for (name, x) in [("expectation_a", d.expectationA), ("expectation_b", d.expectationB)] {
            guard let x else { continue }
            out.append(contentsOf: Array(",\"\(name)\":".utf8))
            ConntrackJSON.write(x, to: &out)
        }
        out.append(125)
    }

    /// The connection (or expectation) a divergence is about, as one conntrack-style line:
    /// side a's view where it has one.
    public static func oneLine(_ d: Divergence) -> String {
        var bytes: [UInt8] = []
        let options = TextFormatOptions(showLayer3: true)
        if let e = d.a ?? d.b {
            ConntrackText.write(e, options: options, to: &bytes)
        } else if let x = d.expectationA ?? d.expectationB {
            bytes.append(contentsOf: Array("expect ".utf8))
            ConntrackText.write(x, options: options, to: &bytes)
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
