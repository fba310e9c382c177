#!/usr/bin/env python3
# Page-cache write cost: 4 x 1 GiB written with 64 KiB pwrites, kept (fresh
# pages) or dropped with fdatasync + POSIX_FADV_DONTNEED every 64 MiB (pages
# recycled). Usage: fresh_pages.py DIR keep|drop
import os, time, sys
D=sys.argv[1]; N=1<<30; B=64<<10
buf=os.urandom(B)
def w(p, drop=False):
    fd=os.open(p,os.O_CREAT|os.O_WRONLY|os.O_TRUNC,0o644)
    r0=os.times(); t0=time.time(); off=0
    while off<N:
        os.pwrite(fd,buf,off); off+=B
        if drop and off % (64<<20) == 0:
            os.fdatasync(fd); os.posix_fadvise(fd,0,off,os.POSIX_FADV_DONTNEED)
    r1=os.times(); t1=time.time(); os.close(fd)
    print(f"{p[-8:]} drop={drop} {N/(t1-t0)/1e6:6.0f} MB/s sys {r1.system-r0.system:5.2f}s", flush=True)
mode=sys.argv[2]
for i in range(4): w(os.path.join(D,f'keep{i}.dat'), drop=(mode=='drop'))
for i in range(4): os.unlink(os.path.join(D,f'keep{i}.dat'))
