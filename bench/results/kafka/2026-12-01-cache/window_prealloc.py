#!/usr/bin/env python3
# 4 GiB in 64 KiB pwrites, fdatasync every 16 MiB; drop pages further than
# WINDOW behind (0 = all synced) and/or reserve blocks ahead with
# fallocate(KEEP_SIZE) in PREALLOC steps. Usage: window_prealloc.py DIR
import os, time, sys, ctypes
libc=ctypes.CDLL(None)
D=sys.argv[1]; N=4<<30; B=64<<10; CH=16<<20
buf=os.urandom(B)
def busy():
    with open('/proc/stat') as f:
        v=[int(x) for x in f.readline().split()[1:]]
    return (sum(v)-v[3]-v[4])/os.sysconf('SC_CLK_TCK')
def w(window, prealloc):
    p=os.path.join(D,'w.dat')
    fd=os.open(p,os.O_CREAT|os.O_WRONLY|os.O_TRUNC,0o644)
    r0=os.times(); b0=busy(); t0=time.time(); off=0; pre=0
    while off<N:
        if prealloc and off>=pre - (prealloc//2):
            libc.fallocate(fd,1,ctypes.c_long(pre),ctypes.c_long(prealloc)); pre+=prealloc
        os.pwrite(fd,buf,off); off+=B
        if off % CH == 0:
            os.fdatasync(fd)
            if window is not None and off>window: os.posix_fadvise(fd,0,off-window,os.POSIX_FADV_DONTNEED)
    r1=os.times(); b1=busy(); t1=time.time(); os.close(fd); os.unlink(p)
    print(f"window={window and window>>20} prealloc={prealloc>>20} {N/(t1-t0)/1e6:6.0f} MB/s proc sys {(r1.system-r0.system)/4:5.2f}s/GiB system {(b1-b0)/4:5.2f}s/GiB", flush=True)
for i in range(2):
    for win,pre in [(0,0),(256<<20,0),(256<<20,64<<20),(1<<30,0),(1<<30,64<<20)]:
        w(win,pre)
