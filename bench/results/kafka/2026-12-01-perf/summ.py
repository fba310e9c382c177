import json,glob,statistics as st,re,collections,sys
# As run for docs/benchmarks.md ("Throughput work (issue #5)"); binaries were copies under /tmp/perf-*/ of each build.
d=collections.defaultdict(list)
for f in glob.glob(sys.argv[1]+'/*.json'):
    m=re.match(r'(.*)-(before|after|final)-(\d)\.json',f.split('/')[-1])
    if m: d[(m[1],m[2])].append(json.load(open(f)))
def mm(v,fmt='{:.0f}'):
    v=[x for x in v if x is not None]
    if not v: return '—'
    return (fmt+' ('+fmt+'–'+fmt+')').format(st.median(v),min(v),max(v))
def med(v,fmt='{:.2f}'):
    v=[x for x in v if x is not None]
    return fmt.format(st.median(v)) if v else '—'
print('| run | build | n | produce MB/s | consume MB/s | ack p50 ms | p99 ms | broker CPU s/GB | client CPU s/GB | load (1-min, before–after) |')
print('|---|---|---:|---:|---:|---:|---:|---:|---:|---|')
order=['acks1-p1','acks1-p4','acks1-p4-s1','acksall-p1','acksall-p4','backlog-p1','backlog-p4','half-acks1-p1','half-acks1-p4','half-acksall-p1','half-acksall-p4']
for cfg in order:
  for v in ['before','after','final']:
    js=d.get((cfg,v))
    if not js: continue
    loads=[j['machine']['load_before'][0] for j in js]+[j['machine']['load_after'][0] for j in js]
    cons=[j['consume']['mb_per_s'] for j in js] if cfg.startswith('backlog') else []
    print(f"| {cfg} | {v} | {len(js)} | {mm([j['produce']['mb_per_s'] for j in js])} | {mm(cons) if cons else '—'} | {med([j['produce']['latency']['p50_ms'] for j in js])} | {mm([j['produce']['latency']['p99_ms'] for j in js],'{:.1f}')} | {mm([j['broker_cpu_s_per_gb'] for j in js],'{:.2f}')} | {med([j['client_cpu_s_per_gb'] for j in js])} | {min(loads):.1f}–{max(loads):.1f} |")
print()
print('| run | build | disk no fsync MB/s | disk group commit MB/s | fdatasync per batch MB/s | loopback MB/s | produce / no fsync | produce / group commit | produce / per batch | consume / loopback |')
print('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|')
for cfg in order:
  for v in ['before','after','final']:
    js=[j for j in d.get((cfg,v),[]) if j.get('baseline')]
    if not js: continue
    b=[j['baseline'] for j in js]
    g=lambda k: [x.get(k) for x in b]
    print(f"| {cfg} | {v} | {mm(g('disk_nosync_mb_per_s'))} | {mm(g('disk_group_commit_mb_per_s'))} | {mm(g('disk_fsync_per_batch_mb_per_s'))} | {mm(g('loopback_tcp_mb_per_s'))} | {med(g('produce_vs_disk_nosync'))} | {med(g('produce_vs_disk_group_commit'))} | {med(g('produce_vs_disk_fsync_per_batch'))} | {med(g('consume_vs_loopback')) if cfg.startswith('backlog') else '—'} |")
