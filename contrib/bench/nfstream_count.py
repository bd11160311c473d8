"""Count nfstream's flows in a capture: the flow-meter baseline for contrib/bench/track.sh.

    python nfstream_count.py FILE      (with nfstream installed; track.sh --install makes a venv)

No dissection (n_dissections=0), no statistics, one metering process (n_meters=1). nfstream
always runs that meter as a child process and hands every flow to this process through a
multiprocessing queue; under `taskset -c 0` both share the one core. Prints `flows: N` last
on standard output (nfstream prints its own warnings there too), the meter count on stderr.
"""
import sys

from nfstream import NFStreamer


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: nfstream_count.py FILE")
    streamer = NFStreamer(source=sys.argv[1], statistical_analysis=False, n_dissections=0,
                          n_meters=1)
    print("nfstream meters:", streamer.n_meters, file=sys.stderr)
    n = 0
    for _ in streamer:
        n += 1
    print("flows:", n)


if __name__ == "__main__":
    main()
