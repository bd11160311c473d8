import ConntrackCore
import KernelConntrack

/// A bad argument: exit status 2, as conntrack(8)'s PARAMETER_PROBLEM.
struct ParameterProblem: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// A failure conntrack reports with exit status 1 while parsing.
struct OtherProblem: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// conntrack(8)'s command-line vocabulary, parsed the way conntrack 1.4.7 parses
/// it (getopt_long with its option table and its command × option matrix).
/// Used by `ctsync conntrack …` and, with the command fixed, by `ctsync dump …` etc.
struct ConntrackArguments {
    enum Command: Character, CaseIterable {
        case list = "L", create = "I", update = "U", delete = "D", get = "G", event = "E"
        case flush = "F", count = "C", stats = "S", version = "V", help = "h", add = "A", load = "R"
    }

    /// Option bits in conntrack's order (the matrix columns).
    enum Opt: Int, CaseIterable {
        case src = 0, dst, replySrc, replyDst, proto, timeout, status, zero, eventMask, tupleSrc, tupleDst
        case maskSrc, maskDst, natRange, mark, id, family, srcNAT, dstNAT, output, secmark, bufferSize
        case anyNAT, zone, label, labelAdd, labelDel, origZone, replyZone

        var flag: String {
            ["src", "dst", "reply-src", "reply-dst", "protonum", "timeout", "status", "zero", "event-mask",
             "tuple-src", "tuple-dst", "mask-src", "mask-dst", "nat-range", "mark", "id", "family", "src-nat",
             "dst-nat", "output", "secmark", "buffer-size", "any-nat", "zone", "label", "label-add",
             "label-del", "orig-zone", "reply-zone"][rawValue]
        }
    }

    // 0 illegal, 1 compulsory, 2 optional, 3 checked by the tuple rules (conntrack.c's matrix).
    static let matrix: [String: [UInt8]] = [
        "L": [2,2,2,2,2,0,2,2,0,0,0,2,2,0,2,0,2,2,2,2,2,0,2,2,2,0,0,2,2],
        "I": [3,3,3,3,1,1,2,0,0,0,0,0,0,2,2,0,0,2,2,0,0,0,0,2,0,2,0,2,2],
        "U": [2,2,2,2,2,2,2,0,0,0,0,2,2,0,2,2,2,2,2,2,0,0,0,0,2,2,2,0,0],
        "D": [2,2,2,2,2,2,2,0,0,0,0,2,2,0,2,2,2,2,2,2,0,0,0,2,2,0,0,2,2],
        "G": [3,3,3,3,1,0,0,0,0,0,0,0,0,0,0,2,0,0,0,2,0,0,0,0,2,0,0,0,0],
        "F": [0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,2,0,0,0,0,0,0,0,0,0,0,0,0],
        "E": [2,2,2,2,2,0,0,0,2,0,0,2,2,0,2,0,2,2,2,2,2,2,2,2,2,0,0,2,2],
        "V": [UInt8](repeating: 0, count: 29),
        "h": [0,0,0,0,2,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],
        "xL": [0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,2,0,0,2,0,0,0,0,0,0,0,0,0],
        "xI": [1,1,2,2,1,1,2,0,0,1,1,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],
        "xD": [1,1,2,2,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],
        "xG": [1,1,2,2,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],
        "xF": [UInt8](repeating: 0, count: 29),
        "xE": [0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,2,0,0,0,0,0,0,0,0,0],
        "C": [UInt8](repeating: 0, count: 29), "xC": [UInt8](repeating: 0, count: 29),
        "S": [UInt8](repeating: 0, count: 29), "xS": [UInt8](repeating: 0, count: 29),
        "A": [3,3,3,3,1,1,2,0,0,0,0,0,0,2,2,0,0,2,2,0,0,0,0,2,0,2,0,2,2],
        "R": [UInt8](repeating: 0, count: 29),
    ]

    enum Output: Equatable { case text, xml, save, json }

    var command: Command = .list
    var table: String = "conntrack"
    var options: Set<Opt> = []
    var filter = EntryFilter()
    var output: Output = .text
    var text = TextFormatOptions()
    var outputLabels = false
    var showTimestamp = false

    // Tuple parts as given (for create/get/delete/update).
    var origSrc: IPAddress?, origDst: IPAddress?, replySrc: IPAddress?, replyDst: IPAddress?
    var l4proto: UInt8?
    var sport: UInt16?, dport: UInt16?, replySport: UInt16?, replyDport: UInt16?
    var icmpType: UInt8?, icmpCode: UInt8?, icmpID: UInt16?
    var tcpState: TCPState?, sctpState: SCTPState?, dccpState: DCCPState?, dccpRole: UInt8?
    var origVtag: UInt32?, replyVtag: UInt32?
    var timeout: UInt32?
    var status: Status?
    var mark: UInt32?, markMask: UInt32?
    var secmark: UInt32?
    var zone: UInt16?, origZone: UInt16?, replyZone: UInt16?
    var family: AddressFamily?
    var srcNAT: NATRequest?, dstNAT: NATRequest?
    var labels: [String] = [], labelsAdd: [String] = [], labelsDel: [String]? = nil
    var eventMask: EventMask?
    var bufferSize: Int?
    var loadFile: String?
    /// Expectation parts (`-I expect`): expected tuple and mask addresses and ports.
    var tupleSrc: IPAddress?, tupleDst: IPAddress?, maskSrc: IPAddress?, maskDst: IPAddress?
    var tupleSport: UInt16?, tupleDport: UInt16?, maskSport: UInt16?, maskDport: UInt16?
    var id: UInt32?
    /// ctsync extensions: permit writes in the host's namespace; re-dump after event loss.
    var hostTable = false
    var resync = false

    static let longOptions: [String: (Character, Int)] = [   // name → (short, 0 none / 1 required / 2 optional)
        "dump": ("L", 2), "create": ("I", 2), "add": ("A", 2), "delete": ("D", 2), "update": ("U", 2),
        "get": ("G", 2), "flush": ("F", 2), "event": ("E", 2), "counter": ("C", 2), "count": ("C", 2),
        "stats": ("S", 0), "version": ("V", 0), "help": ("h", 0), "load-file": ("R", 1),
        "orig-src": ("s", 1), "src": ("s", 1), "orig-dst": ("d", 1), "dst": ("d", 1),
        "reply-src": ("r", 1), "reply-dst": ("q", 1), "protonum": ("p", 1), "timeout": ("t", 1),
        "status": ("u", 1), "zero": ("z", 0), "event-mask": ("e", 1), "tuple-src": ("[", 1),
        "tuple-dst": ("]", 1), "mask-src": ("{", 1), "mask-dst": ("}", 1), "nat-range": ("a", 1),
        "mark": ("m", 1), "secmark": ("c", 1), "id": ("i", 2), "family": ("f", 1), "src-nat": ("n", 2),
        "dst-nat": ("g", 2), "output": ("o", 1), "buffer-size": ("b", 1), "any-nat": ("j", 2),
        "zone": ("w", 1), "label": ("l", 1), "label-add": ("<", 1), "label-del": (">", 2),
        "orig-zone": ("(", 1), "reply-zone": (")", 1),
        "host-table": ("H", 0), "resync": ("Y", 0),
    ]
    static let shortArgs: [Character: Int] = [
        "L": 0, "I": 0, "U": 0, "D": 0, "G": 0, "E": 0, "F": 0, "A": 0, "h": 0, "V": 0, "S": 0, "C": 2, "R": 1,
        "s": 1, "d": 1, "r": 1, "q": 1, "p": 1, "t": 1, "u": 1, "e": 1, "a": 1, "z": 0, "m": 1, "i": 1,
        "f": 1, "o": 1, "n": 2, "g": 2, "c": 1, "b": 1, "j": 2, "w": 1, "l": 1,
    ]
    /// Protocol options: name → takes an argument. Parsed after -p, as conntrack's extensions.
    static let protoOptions: Set<String> = [
        "sport", "orig-port-src", "dport", "orig-port-dst", "reply-port-src", "reply-port-dst", "state",
        "icmp-type", "icmp-code", "icmp-id", "icmpv6-type", "icmpv6-code", "icmpv6-id", "srckey", "dstkey",
        "reply-key-src", "reply-key-dst", "orig-vtag", "reply-vtag", "role", "mask-port-src", "mask-port-dst",
        "tuple-port-src", "tuple-port-dst",
    ]

    /// Parses conntrack's argv (without the program name).
    /// - Parameter fixed: the command implied by a ctsync subcommand (nil for `ctsync conntrack`).
    static func parse(_ argv: [String], fixed: Command? = nil, lenient: Bool = false,
                      labelNames: () -> [Int: String]?) throws -> ConntrackArguments {
        var a = ConntrackArguments()
        a.lenient = lenient
        var commandSeen: Command? = fixed
        if let fixed { a.command = fixed }
        var i = 0
        var pendingProto: [(String, String)] = []
        // `ctsync dump expect`: with the command fixed, a leading word names the table.
        if fixed != nil, let first = argv.first, !first.hasPrefix("-") {
            a.table = first
            i = 1
        }

        func setCommand(_ c: Command) throws {
            if let prev = commandSeen, prev != c || fixed == nil {
                throw ParameterProblem("Invalid commands combination")
            }
            commandSeen = c
            a.command = c
        }
        func takeTable(_ explicit: String?) {
            if let explicit { a.table = explicit; return }
            if i < argv.count, !argv[i].hasPrefix("-") { a.table = argv[i]; i += 1 }
        }

        while i < argv.count {
            let arg = argv[i]; i += 1
            var key: Character
            var value: String?
            var name: String
            if arg.hasPrefix("--") && arg.count > 2 {
                let body = String(arg.dropFirst(2))
                let parts = body.split(separator: "=", maxSplits: 1)
                let n = String(parts[0])
                var inline = parts.count > 1 ? String(parts[1]) : nil
                if protoOptions.contains(n) {
                    if inline == nil {
                        guard i < argv.count else { throw ParameterProblem("option `--\(n)' requires an argument") }
                        inline = argv[i]; i += 1
                    }
                    pendingProto.append((n, inline!))
                    continue
                }
                // getopt_long accepts unambiguous prefixes.
                let matches = longOptions[n] != nil ? [n] : longOptions.keys.filter { $0.hasPrefix(n) }
                let distinct = Set(matches.map { longOptions[$0]!.0 })
                guard distinct.count == 1, let full = matches.first else {
                    throw ParameterProblem(matches.isEmpty ? "unknown option `\(arg)'" : "option `\(arg)' is ambiguous")
                }
                let (k, kind) = longOptions[full]!
                key = k; name = full
                if kind == 1 && inline == nil {
                    guard i < argv.count else { throw ParameterProblem("option `\(arg)' requires an argument") }
                    inline = argv[i]; i += 1
                } else if kind == 0 && inline != nil {
                    throw ParameterProblem("option `--\(full)' doesn't allow an argument")
                } else if kind == 2 && inline == nil && k != "L" && k != "I" && k != "U" && k != "D" && k != "G"
                            && k != "F" && k != "E" && k != "A" && k != "C" && i < argv.count && !argv[i].hasPrefix("-") {
                    inline = argv[i]; i += 1
                }
                value = inline
            } else if arg.hasPrefix("-") && arg.count > 1 {
                let chars = Array(arg.dropFirst())
                key = chars[0]; name = String(key)
                guard let kind = shortArgs[key] else { throw ParameterProblem("unknown option `\(arg)'") }
                if chars.count > 1 {
                    if kind == 0 {
                        // Bundled flags like -Lz: push the rest back.
                        var rest = argv
                        rest.insert("-" + String(chars.dropFirst()), at: i)
                        return try parse(Array(argv[..<(i - 1)]) + [String("-" + String(key))] + Array(rest[i...]), fixed: fixed,
                                         lenient: lenient, labelNames: labelNames)
                    }
                    value = String(chars.dropFirst())
                } else if kind == 1 {
                    guard i < argv.count else { throw ParameterProblem("option `\(arg)' requires an argument") }
                    value = argv[i]; i += 1
                } else if kind == 2, i < argv.count, !argv[i].hasPrefix("-"), key != "C" {
                    value = argv[i]; i += 1
                }
            } else {
                throw ParameterProblem("Bad argument `\(arg)'")
            }

            switch key {
            case "L": try setCommand(.list); takeTable(value)
            case "I": try setCommand(.create); takeTable(value)
            case "U": try setCommand(.update); takeTable(value)
            case "D": try setCommand(.delete); takeTable(value)
            case "G": try setCommand(.get); takeTable(value)
            case "E": try setCommand(.event); takeTable(value)
            case "F": try setCommand(.flush); takeTable(value)
            case "A": try setCommand(.add); takeTable(value)
            case "C": try setCommand(.count); takeTable(value)
            case "S": try setCommand(.stats); takeTable(nil)
            case "V": try setCommand(.version)
            case "h": try setCommand(.help)
            case "R": try setCommand(.load); a.loadFile = value
            case "H": a.hostTable = true
            case "Y": a.resync = true
            default:
                try a.option(key, name: name, value: value, labelNames: labelNames)
            }
        }
        guard commandSeen != nil else { throw ParameterProblem("no command specified") }
        if !["conntrack", "expect", "dying", "unconfirmed"].contains(a.table) {
            throw ParameterProblem("unknown type `\(a.table)'")
        }
        if (a.table == "dying" || a.table == "unconfirmed") && a.command != .list {
            throw ParameterProblem("Can't do that command with tables `dying' and `unconfirmed'")
        }
        for (n, v) in pendingProto { try a.protoOption(n, v) }
        try a.check()
        return a
    }

    mutating func option(_ key: Character, name: String, value: String?, labelNames: () -> [Int: String]?) throws {
        func need() throws -> String {
            guard let value else { throw ParameterProblem("option `\(name)' requires an argument") }
            return value
        }
        func address(_ s: String) throws -> IPNetwork {
            guard let n = IPNetwork(s) else { throw ParameterProblem("Bad parameter `\(s)'") }
            if let f = family, f != n.address.family { throw ParameterProblem("mismatched address family") }
            family = n.address.family
            return n
        }
        let opt: Opt
        switch key {
        case "s": opt = .src; let n = try address(try need()); origSrc = n.address; filter.originalSource = n
        case "d": opt = .dst; let n = try address(try need()); origDst = n.address; filter.originalDestination = n
        case "r": opt = .replySrc; let n = try address(try need()); replySrc = n.address; filter.replySource = n
        case "q": opt = .replyDst; let n = try address(try need()); replyDst = n.address; filter.replyDestination = n
        case "p":
            opt = .proto
            let v = try need()
            guard let p = L4Protocol(name: v) else { throw ParameterProblem("proto `\(v)' not found") }
            l4proto = p.number; filter.l4proto = p.number
        case "t":
            opt = .timeout
            guard let t = UInt32(try need()) else { throw ParameterProblem("Bad parameter `\(value!)'") }
            timeout = t
        case "u":
            opt = .status
            var s = Status()
            for part in try need().split(separator: ",") where part != "UNSET" {
                guard let bit = Status.settableByName[String(part)] else { throw ParameterProblem("Bad parameter `\(part)'") }
                s.insert(bit)
            }
            status = s; filter.status = s
        case "z": opt = .zero
        case "e":
            opt = .eventMask
            var m = EventMask()
            for part in try need().split(separator: ",") {
                switch part.uppercased() {
                case "ALL": m.formUnion(.allEntries)
                case "NEW": m.insert(.new)
                case "UPDATES", "UPDATE": m.insert(.update)
                case "DESTROY": m.insert(.destroy)
                default: throw ParameterProblem("Bad parameter `\(part)'")
                }
            }
            eventMask = m
        case "m":
            opt = .mark
            let v = try need()
            let parts = v.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
            guard let m = number(parts[0]) else { throw ParameterProblem("Bad parameter `\(v)'") }
            mark = m; filter.mark = m
            if parts.count == 2 {
                guard let mk = number(parts[1]) else { throw ParameterProblem("Bad parameter `\(v)'") }
                markMask = mk; filter.markMask = mk
            }
        case "c":
            opt = .secmark
            guard let v = ConntrackArguments.number(Substring(try need())) else { throw ParameterProblem("Bad parameter `\(value!)'") }
            secmark = v; filter.secmark = v
        case "i":
            opt = .id
            if let v = value {
                guard let n = UInt32(v) else { throw ParameterProblem("Bad parameter `\(v)'") }
                id = n; filter.id = n
            }
        case "f":
            opt = .family
            let v = try need()
            guard let f = AddressFamily(name: v) else { throw ParameterProblem("`\(v)' unsupported protocol") }
            family = f; filter.family = f
        case "n", "g", "j":
            opt = key == "n" ? .srcNAT : key == "g" ? .dstNAT : .anyNAT
            var m = EntryFilter.NATMatch()
            var req: NATRequest?
            if let v = value {
                var host = v, port: UInt16?
                if let colon = v.lastIndex(of: ":"), v.filter({ $0 == ":" }).count == 1 || v.hasPrefix("[") {
                    host = String(v[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
                    guard let p = UInt16(v[v.index(after: colon)...]) else { throw ParameterProblem("Bad parameter `\(v)'") }
                    port = p
                }
                guard let ip = IPAddress(host) else { throw ParameterProblem("Bad parameter `\(v)'") }
                m = EntryFilter.NATMatch(address: ip, port: port)
                req = NATRequest(address: ip, port: port)
            }
            switch key {
            case "n": filter.sourceNAT = m; srcNAT = req
            case "g": filter.destinationNAT = m; dstNAT = req
            default: filter.anyNAT = m
            }
        case "o":
            opt = .output
            for part in try need().split(separator: ",") {
                switch part {
                case "text", "default": output = .text
                case "xml": output = .xml
                case "extended": text.showLayer3 = true
                case "timestamp": showTimestamp = true
                case "id": text.showID = true
                case "ktimestamp": text.showKernelTimestamps = true
                case "labels": outputLabels = true
                case "save": output = .save
                case "json": output = .json
                default: throw ParameterProblem("Bad parameter `\(part)'")
                }
            }
            if output == .save && (text.showLayer3 || showTimestamp || text.showID || text.showKernelTimestamps || outputLabels) {
                // conntrack reports this one as a general failure (exit 1), not a parameter problem.
                throw OtherProblem("cannot combine save output with any other output type, use -o save only")
            }
        case "b":
            opt = .bufferSize
            guard let b = Int(try need()), b > 0 else { throw ParameterProblem("Bad parameter `\(value!)'") }
            bufferSize = b
        case "w":
            opt = .zone
            guard let z = number(Substring(try need()), bits: 16) else { throw ParameterProblem("Bad parameter `\(value!)'") }
            zone = UInt16(z); filter.zone = UInt16(z)
        case "(":
            opt = .origZone
            guard let z = number(Substring(try need()), bits: 16) else { throw ParameterProblem("Bad parameter `\(value!)'") }
            origZone = UInt16(z); filter.originalZone = UInt16(z)
        case ")":
            opt = .replyZone
            guard let z = number(Substring(try need()), bits: 16) else { throw ParameterProblem("Bad parameter `\(value!)'") }
            replyZone = UInt16(z); filter.replyZone = UInt16(z)
        case "l", "<", ">":
            opt = key == "l" ? .label : key == "<" ? .labelAdd : .labelDel
            let names = value.map { $0.split(separator: ",").map(String.init) } ?? []
            let map = labelNames()
            for n in names where LabelMap.bit(of: n, in: map) == nil { throw ParameterProblem("unknown label '\(n)'") }
            switch key {
            case "l":
                labels += names
                filter.labels = Labels(bits: labels.compactMap { LabelMap.bit(of: $0, in: map) })
            case "<": labelsAdd += names
            default: labelsDel = (labelsDel ?? []) + names
            }
        case "[", "]", "{", "}":
            opt = key == "[" ? .tupleSrc : key == "]" ? .tupleDst : key == "{" ? .maskSrc : .maskDst
            let v = try need()
            guard let a = IPAddress(v) else { throw ParameterProblem("Bad parameter `\(v)'") }
            switch key {
            case "[": tupleSrc = a
            case "]": tupleDst = a
            case "{": maskSrc = a
            default: maskDst = a
            }
        case "a":
            opt = .natRange
            _ = try need()
        default:
            throw ParameterProblem("unknown option `-\(key)'")
        }
        options.insert(opt)
    }

    /// Parses a decimal or 0x-hex number as conntrack's strtoul(…, 0) does.
    /// conntrack 1.4.7 reads marks and zones with an unchecked strtoul: "zz" is 0 and
    /// 70000 wraps to 4464. The drop-in does the same; ctsync's own commands refuse them.
    var lenient = false

    func number(_ s: Substring, bits: Int = 32) -> UInt32? {
        if let v = ConntrackArguments.number(s), bits == 32 || v < (1 << UInt32(bits)) { return v }
        guard lenient else { return nil }
        var digits = s.prefix { $0.isNumber }
        var radix = 10
        if s.hasPrefix("0x") || s.hasPrefix("0X") { digits = s.dropFirst(2).prefix { $0.isHexDigit }; radix = 16 }
        let v = UInt64(digits, radix: radix) ?? 0
        return UInt32(truncatingIfNeeded: bits == 32 ? v : v & ((1 << UInt64(bits)) - 1))
    }

    static func number(_ s: Substring) -> UInt32? {
        if s.hasPrefix("0x") || s.hasPrefix("0X") { return UInt32(s.dropFirst(2), radix: 16) }
        return UInt32(s)
    }

    mutating func protoOption(_ name: String, _ v: String) throws {
        guard let p = l4proto else { throw ParameterProblem("unknown option `--\(name)'") }
        let proto = L4Protocol(number: p)
        func port() throws -> UInt16 {
            guard let n = UInt16(v) else { throw ParameterProblem("Bad parameter `\(v)'") }
            return n
        }
        func byte() throws -> UInt8 {
            guard let n = UInt8(v) else { throw ParameterProblem("Bad parameter `\(v)'") }
            return n
        }
        let portNames: Set<String> = ["sport", "orig-port-src", "dport", "orig-port-dst", "reply-port-src", "reply-port-dst",
                                      "mask-port-src", "mask-port-dst", "tuple-port-src", "tuple-port-dst"]
        let valid: Bool
        switch proto {
        case .tcp: valid = portNames.contains(name) || name == "state"
        case .udp, .udplite: valid = portNames.contains(name)
        case .sctp: valid = portNames.contains(name) || ["state", "orig-vtag", "reply-vtag"].contains(name)
        case .dccp: valid = portNames.contains(name) || ["state", "role"].contains(name)
        case .icmp: valid = name.hasPrefix("icmp-")
        case .icmpv6: valid = name.hasPrefix("icmpv6-")
        case .gre: valid = ["srckey", "dstkey", "reply-key-src", "reply-key-dst"].contains(name)
        case .other: valid = false
        }
        guard valid else { throw ParameterProblem("unknown option `--\(name)'") }
        switch name {
        case "sport", "orig-port-src": sport = try port(); filter.originalSourcePort = sport
        case "dport", "orig-port-dst": dport = try port(); filter.originalDestinationPort = dport
        case "reply-port-src": replySport = try port(); filter.replySourcePort = replySport
        case "reply-port-dst": replyDport = try port(); filter.replyDestinationPort = replyDport
        case "srckey": sport = try greKey(v)
        case "dstkey": dport = try greKey(v)
        case "reply-key-src": replySport = try greKey(v)
        case "reply-key-dst": replyDport = try greKey(v)
        case "icmp-type", "icmpv6-type": icmpType = try byte(); filter.icmpType = icmpType
        case "icmp-code", "icmpv6-code": icmpCode = try byte(); filter.icmpCode = icmpCode
        case "icmp-id", "icmpv6-id": icmpID = try port(); filter.icmpID = icmpID
        case "state":
            switch proto {
            case .tcp:
                guard let s = TCPState(name: v) else { throw ParameterProblem("unknown state `\(v)'") }
                tcpState = s; filter.tcpState = s
            case .sctp:
                guard let s = SCTPState(name: v) else { throw ParameterProblem("unknown state `\(v)'") }
                sctpState = s
            default:
                guard let s = DCCPState(name: v) else { throw ParameterProblem("unknown state `\(v)'") }
                dccpState = s
            }
        case "orig-vtag": guard let n = UInt32(v) else { throw ParameterProblem("Bad parameter `\(v)'") }; origVtag = n
        case "reply-vtag": guard let n = UInt32(v) else { throw ParameterProblem("Bad parameter `\(v)'") }; replyVtag = n
        case "role":
            switch v { case "client": dccpRole = 0; case "server": dccpRole = 1
            default: throw ParameterProblem("Bad parameter `\(v)'") }
        case "tuple-port-src": tupleSport = try port()
        case "tuple-port-dst": tupleDport = try port()
        case "mask-port-src": maskSport = try port()
        case "mask-port-dst": maskDport = try port()
        default: break
        }
    }

    func greKey(_ v: String) throws -> UInt16 {
        if let n = ConntrackArguments.number(Substring(v)), n <= 0xffff { return UInt16(n) }
        throw ParameterProblem("Bad parameter `\(v)'")
    }

    var matrixKey: String {
        (table == "expect" ? "x" : "") + String(command.rawValue)
    }

    /// The command × option matrix and the tuple rules (conntrack.c's generic_opt_check and friends).
    mutating func check() throws {
        guard let row = ConntrackArguments.matrix[matrixKey] else {
            throw ParameterProblem("Can't do that command with table `\(table)'")
        }
        for opt in Opt.allCases {
            var rule = row[opt.rawValue]
            // ctsync's own `stats -o json` (conntrack -S has no output option).
            if command == .stats && opt == .output && !lenient { rule = 2 }
            if options.contains(opt) && rule == 0 {
                throw ParameterProblem("Illegal option `--\(opt.flag)' with this command")
            }
            if !options.contains(opt) && rule == 1 {
                throw ParameterProblem("You need to supply the `--\(opt.flag)' option for this command")
            }
        }
        if options.contains(.zero) && command == .list && !filter.isEmpty && !(filter == EntryFilter()) {
            // conntrack: -z cannot be combined with filters.
            var f = filter; f.family = nil
            if !f.isEmpty { throw ParameterProblem("Can't use -z with filtering parameters") }
        }
        if [.create, .add, .get].contains(command) && table == "conntrack" {
            let hasOrig = options.contains(.src) && options.contains(.dst)
            let hasReply = options.contains(.replySrc) && options.contains(.replyDst)
            if !hasOrig && !hasReply {
                throw ParameterProblem("you have to specify both `--src' and `--dst' or both `--reply-src' and `--reply-dst'")
            }
            if let p = l4proto {
                switch L4Protocol(number: p) {
                case .tcp, .udp, .udplite, .sctp, .dccp:
                    if (sport == nil || dport == nil) && (replySport == nil || replyDport == nil) {
                        throw ParameterProblem("missing ports: you have to specify `--sport' and `--dport'")
                    }
                case .gre:
                    if (sport == nil || dport == nil) && (replySport == nil || replyDport == nil) {
                        throw ParameterProblem("you have to specify `--srckey' and `--dstkey'")
                    }
                case .icmp, .icmpv6:
                    if icmpType == nil || icmpCode == nil {
                        throw ParameterProblem("missing ICMP type and code: you have to specify `--icmp-type' and `--icmp-code'")
                    }
                case .other:
                    throw ParameterProblem("this protocol has no tuple fields that conntrack can set")
                }
            }
            if command != .get {
                if L4Protocol(number: l4proto ?? 0) == .tcp && tcpState == nil {
                    throw ParameterProblem("You need to supply the `--state' option for this command")
                }
                if L4Protocol(number: l4proto ?? 0) == .sctp && sctpState == nil {
                    throw ParameterProblem("You need to supply the `--state' option for this command")
                }
            }
        }
        if options.contains(.srcNAT) || options.contains(.dstNAT) || options.contains(.anyNAT) {
            if [.create, .add].contains(command) && (srcNAT == nil && options.contains(.srcNAT) || dstNAT == nil && options.contains(.dstNAT)) {
                throw ParameterProblem("you have to specify an address with `--src-nat' and `--dst-nat' for this command")
            }
        }
    }

    // MARK: Building entries from the arguments

    /// The original tuple given on the command line (reply addresses inverted when only they were given).
    func originalTuple() -> Tuple? {
        guard let p = l4proto else { return nil }
        let src = origSrc ?? replyDst, dst = origDst ?? replySrc
        guard let src, let dst else { return nil }
        var t = Tuple(source: src, destination: dst, l4proto: p)
        switch L4Protocol(number: p) {
        case .icmp, .icmpv6:
            t.icmpType = icmpType ?? 0; t.icmpCode = icmpCode ?? 0; t.icmpID = icmpID ?? 0
        default:
            t.sourcePort = sport ?? replyDport ?? 0; t.destinationPort = dport ?? replySport ?? 0
        }
        t.zone = origZone
        return t
    }

    /// NAT for a create: `-n`/`-g` give the address; the port comes from `-n ADDR:PORT`
    /// or, as in `save` lines, from --reply-port-dst / --reply-port-src when they differ.
    var natForCreate: (source: NATRequest?, destination: NATRequest?) {
        var s = srcNAT, d = dstNAT
        if var n = s, n.port == nil, let p = replyDport, p != (sport ?? p) { n.port = p; s = n }
        if var n = d, n.port == nil, let p = replySport, p != (dport ?? p) { n.port = p; d = n }
        return (s, d)
    }

    /// The expectation of `-I expect`: master from -s/-d/--sport/--dport, expected tuple
    /// from --tuple-*, mask from --mask-*.
    func expectation() -> Expectation? {
        guard let master = originalTuple(), let ts = tupleSrc, let td = tupleDst, let ms = maskSrc, let md = maskDst else { return nil }
        let p = master.l4proto
        let tuple = Tuple(source: ts, destination: td, l4proto: p, sourcePort: tupleSport ?? 0, destinationPort: tupleDport ?? 0)
        let mask = Tuple(source: ms, destination: md, l4proto: p, sourcePort: maskSport ?? 0, destinationPort: maskDport ?? 0)
        var x = Expectation(master: master, tuple: tuple, mask: mask)
        x.timeout = timeout
        return x
    }

    /// The entry to create or update: every field the arguments set.
    func entry(labelNames: [Int: String]?) -> ConntrackEntry? {
        guard let o = originalTuple() else { return nil }
        var r = o.inverted()
        r.zone = replyZone
        if let a = replySrc { r.source = a }
        if let a = replyDst { r.destination = a }
        if let p = replySport { r.sourcePort = p }
        if let p = replyDport { r.destinationPort = p }
        var e = ConntrackEntry(original: o, reply: r)
        e.timeout = timeout
        e.status = status
        e.mark = mark
        e.zone = zone
        if let s = tcpState { e.protoInfo = .tcp(TCPInfo(state: s.rawValue)) }
        if let s = sctpState { e.protoInfo = .sctp(SCTPInfo(state: s.rawValue, vtagOriginal: origVtag, vtagReply: replyVtag)) }
        if let s = dccpState { e.protoInfo = .dccp(DCCPInfo(state: s.rawValue, role: dccpRole)) }
        let add = labels + labelsAdd
        if !add.isEmpty { e.labels = Labels(bits: add.compactMap { LabelMap.bit(of: $0, in: labelNames) }) }
        return e
    }
}

import Foundation
