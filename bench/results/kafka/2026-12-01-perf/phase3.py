import json, os, subprocess, statistics, sys
# As run for docs/benchmarks.md ("Throughput work (issue #5)"); binaries were copies under /tmp/perf-*/ of each build.
out=sys.argv[1]; runs=3
exe={'before':'/tmp/perf-base/odradek-bench','final':'/tmp/perf-final/odradek-bench'}
common=["--duration","5s","--warmup","1s","--quiet","--message-size","1024","--data-dir","/work/wt-perf/target/benchdata"]
os.makedirs(out,exist_ok=True)
maxcfg={}
for p in (1,4):
    maxcfg[f"acks1-p{p}"]=["--partitions",str(p),"--consumers","0","--acks","1","--baseline"]
    maxcfg[f"acksall-p{p}"]=["--partitions",str(p),"--consumers","0","--acks","all","--baseline"]
    maxcfg[f"backlog-p{p}"]=["--partitions",str(p),"--consume-phase","after","--messages","1000000","--acks","1","--baseline"]
def run(name,v,args,i):
    path=os.path.join(out,f"{name}-{v}-{i}.json")
    load=open("/proc/loadavg").read().split()[0]
    r=subprocess.run([exe[v]]+common+args+["--json",path],capture_output=True,text=True)
    if r.returncode: print("FAIL",name,v,r.stderr[-500:],flush=True); return
    j=json.load(open(path)); pr=j['produce']
    print(f"[{name} {v} #{i}] load {load} prod {pr['mb_per_s']:.0f} cons {j['consume']['mb_per_s']:.0f} p99 {pr['latency']['p99_ms']} cpu {j['broker_cpu_s_per_gb']:.2f}",flush=True)
# max-rate rows of the final build (its own default shards)
for i in range(1,runs+1):
    for name,args in maxcfg.items(): run(name,'final',args,i)
# 50 % latency: before rates from the final/ matrix (same machine, 2 shards), final from above
def med(d,name,v):
    vals=[]
    for i in range(1,runs+1):
        try: vals.append(json.load(open(os.path.join(d,f"{name}-{v}-{i}.json")))['produce']['msgs_per_s'])
        except FileNotFoundError: pass
    return statistics.median(vals)
rates={}
for p in (1,4):
    for a in ("1","all"):
        n=f"acks{a}-p{p}"
        rates[(n,'before')]=round(med('/tmp/perf-runs/final',n,'before')/2)
        rates[(n,'final')]=round(med(out,n,'final')/2)
print(rates,flush=True)
for i in range(1,runs+1):
    for (n,v),r in rates.items():
        p=n.split('-p')[1]; a=n[4:].split('-')[0]
        run("half-"+n,v,["--partitions",p,"--consumers","0","--acks",a,"--rate",str(r)],i)
