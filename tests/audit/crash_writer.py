"""Child process of the crash test: append decisions from several threads as fast as possible, forever.

``python crash_writer.py DB THREADS SYNCHRONOUS`` prints ``ready`` once the log is open, then each request id on
its own line - only after `AuditLog.append` returned for it, i.e. after it was acknowledged as committed. The
parent kills this process with SIGKILL and checks that every printed id is in the database.
"""

from __future__ import annotations

import sys
import threading

from safesail_guard.audit import AuditLog, AuditRecord


def main(path: str, n_threads: int, synchronous: str) -> None:
    log = AuditLog.open(path, store_text="full", retention_days=None, synchronous=synchronous)
    out = threading.Lock()

    def emit(line: str) -> None:
        with out:  # one write + flush per line: lines never interleave and leave as soon as they are acked
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def work(t: int) -> None:
        i = 0
        while True:
            request_id = f"t{t}-{i}"
            log.append(AuditRecord(request_id=request_id, stage="final", action="block" if i % 3 else "allow",
                                   policy="default", rules=["r"], features=[{"id": "f", "activation": float(i)}],
                                   concepts={"weapons": 0.9}, text=f"text {i} " * 20, extra={"i": i}))
            emit(request_id)
            i += 1

    emit("ready")
    for t in range(n_threads):
        threading.Thread(target=work, args=(t,), daemon=True).start()
    threading.Event().wait()  # until killed


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
