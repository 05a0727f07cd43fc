"""The latency worker process (see evaluation.latency.LatencyWorker).

Protocol over stdin/stdout, pickled: first (reference_path, profile, timing: a feed or a shape,
see HardwareProfile.feed_for); then one
(kind, candidate path) per request, answered with (True,
payload) or (False, message): kind "measure" -> LatencyResult (evaluation.latency) with the
profile's full protocol, "screen" -> the same with its search-time one (at most
search_max_passes pairs),
"nodes" -> (nodes, units) (evaluation.graph_profile.node_costs against the reference).
While it times, the worker also sends PROGRESS (a string) after a block of runs, at most
once a second: the parent takes a worker silent for its timeout for hung and kills it.
End of input ends the worker. Anything printed goes to stderr, never into the protocol."""

from __future__ import annotations

import os
import pickle
import sys
import time


def main() -> int:
    proto_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints cannot corrupt the protocol
    proto_in = sys.stdin.buffer
    from autocompress.errors import one_line
    from autocompress.evaluation.graph_profile import node_costs
    from autocompress.evaluation.latency import PROGRESS, measure_interleaved

    try:
        reference_path, profile, timing = pickle.load(proto_in)
    except EOFError:
        return 0
    profile.pin_process()  # the profile's cpu_affinity, if any: this process only times
    reference = profile.session(reference_path)
    screening = profile.screening()
    said = [time.monotonic()]

    def progress() -> None:
        if time.monotonic() - said[0] >= 1.0:
            pickle.dump(PROGRESS, proto_out)
            proto_out.flush()
            said[0] = time.monotonic()
    while True:
        try:
            kind, path = pickle.load(proto_in)
        except EOFError:
            return 0
        try:
            if kind == "nodes":
                reply = (True, node_costs(reference_path, path, profile, timing))
            else:
                protocol = screening if kind == "screen" else profile
                reply = (True, measure_interleaved(reference_path, path, protocol, timing, reference_session=reference, on_block=progress))
        except Exception as exc:  # noqa: BLE001 - reported to the parent as this candidate's failure
            reply = (False, one_line(exc))
        pickle.dump(reply, proto_out)
        proto_out.flush()


if __name__ == "__main__":
    sys.exit(main())
