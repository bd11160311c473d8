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
            out.append(contentsOf: Array("{\"v\":1,\"kind\":\"divergence\",\"classes\":[".utf8))
            for (i, k) in d.classes.enumerated() { if i > 0 { out.append(44) }; str(k.rawValue) }
            out.append(contentsOf: Array("],\"cause\":".utf8)); str(d.cause.code)
            out.append(contentsOf: Array(",\"explanation\":".utf8)); str(d.cause.text)
            for (name, e) in [("a", d.a), ("b", d.b)] {
                guard let e else { continue }
                out.append(contentsOf: Array(",\"\(name)\":".utf8))
                var entry: [UInt8] = []
                ConntrackJSON.write(e, to: &entry)
                out.append(contentsOf: entry)
            }
            for (name, x) in [("expectation_a", d.expectationA), ("expectation_b", d.expectationB)] {
                guard let x else { continue }
                out.append(contentsOf: Array(",\"\(name)\":".utf8))
                ConntrackJSON.write(x, to: &out)
            }
            out.append(contentsOf: Array("}\n".utf8))
        }
        return String(decoding: out, as: UTF8.self)
    }
}
