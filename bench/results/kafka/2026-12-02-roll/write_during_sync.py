"""Appending pwrites while another thread calls fdatasync every 16 MiB
(docs/benchmarks.md, "Rolls off the append path"): write latency with blocks
reserved by fallocate(KEEP_SIZE) ("keep") or the length preallocated ("size").
    python3 write_during_sync.py keep|size [WRITE_BYTES]"""
import os, sys, threading, time
mode = sys.argv[1]  # keep | size
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../../target/benchdata/probe.dat")
try: os.unlink(path)
except FileNotFoundError: pass
fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
TOTAL = 1 << 30; W = int(sys.argv[2]) if len(sys.argv) > 2 else 64 << 10; SYNC = 16 << 20
if mode == "keep":
    import ctypes; libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.fallocate(fd, 1, ctypes.c_long(0), ctypes.c_long(TOTAL))  # FALLOC_FL_KEEP_SIZE
else:
    os.posix_fallocate(fd, 0, TOTAL)
    os.fsync(fd)
buf = os.urandom(W)
written = 0; lat = []
ev = threading.Event(); stop = False; synced = 0
def syncer():
    global synced
    while not stop:
        ev.wait(); ev.clear()
        if stop: break
        os.fdatasync(fd)
threading.Thread(target=syncer, daemon=True).start()
next_sync = SYNC
t_start = time.perf_counter(); pace = 420e6
while written < TOTAL:
    due = t_start + written / pace
    now = time.perf_counter()
    if due > now: time.sleep(due - now)
    t = time.perf_counter()
    os.pwrite(fd, buf, written)
    lat.append(time.perf_counter() - t)
    written += W
    if written >= next_sync:
        next_sync += SYNC; ev.set()
stop = True; ev.set()
lat.sort(); n = len(lat)
print(mode, "writes", n, "p50 %.3f p99 %.3f p99.9 %.3f max %.2f ms" % (lat[n//2]*1e3, lat[int(n*.99)]*1e3, lat[int(n*.999)]*1e3, lat[-1]*1e3), "over 3 ms:", sum(1 for x in lat if x > 3e-3))
os.unlink(path)
