import CNetfilterConntrack

/// Connection label names from connlabel.conf, read through libnetfilter_conntrack
/// (the same file and rules conntrack(8) uses).
public enum LabelMap {
    /// Bit → name for every label the file names; nil when there is no such file.
    /// - Parameter path: nil for the default (/etc/xtables/connlabel.conf).
    public static func load(path: String? = nil) -> [Int: String]? {
        let map: OpaquePointer?
        if let path { map = nfct_labelmap_new(path) } else { map = nfct_labelmap_new(nil) }
        guard let map else { return nil }
        defer { nfct_labelmap_destroy(map) }
        var names: [Int: String] = [:]
        for bit in 0..<128 {
            if let c = nfct_labelmap_get_name(map, UInt32(bit)) {
                let s = String(cString: c)
                if !s.isEmpty { names[bit] = s }
            }
        }
        return names
    }

    /// The bit of a label name or number, or nil when unknown.
    public static func bit(of label: String, in names: [Int: String]?) -> Int? {
        if let n = Int(label), n >= 0, n < 128 { return n }
        return names?.first(where: { $0.value == label })?.key
    }
}
