"""The latency worker process (see evaluation.latency.LatencyWorker).

Protocol over stdin/stdout, pickled: first (reference_path, profile, input_shape); then one
(candidate path, candidate input shape or None) per request, answered with (True,
LatencyResult) or (False, message).
End of input ends the worker. Anything printed goes to stderr, never into the protocol."""

from __future__ import annotations

import os
import pickle
import sys


def main() -> int:
    proto_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints cannot corrupt the protocol
    proto_in = sys.stdin.buffer
    from autocompress.errors import one_line
    from autocompress.evaluation.latency import measure_interleaved

    try:
        reference_path, profile, input_shape = pickle.load(proto_in)
    except EOFError:
        return 0
    profile.pin_process()  # the profile's cpu_affinity, if any: this process only times
    reference = profile.session(reference_path)
    while True:
        try:
            path, shape = pickle.load(proto_in)
        except EOFError:
            return 0
        try:
            reply = (True, measure_interleaved(reference_path, path, profile, input_shape, reference_session=reference, candidate_shape=shape))
        except Exception as exc:  # noqa: BLE001 - reported to the parent as this candidate's failure
            reply = (False, one_line(exc))
        pickle.dump(reply, proto_out)
        proto_out.flush()


if __name__ == "__main__":
    sys.exit(main())
