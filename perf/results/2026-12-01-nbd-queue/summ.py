import json, sys, statistics as st
runs=[json.loads(l) for l in open(sys.argv[1]) if l.startswith('{')]
base=sys.argv[2] if len(sys.argv)>2 else None
lim=float(sys.argv[3]) if len(sys.argv)>3 else 1e9
bad={(r['workload'],r['rep']) for r in runs if r.get('other_cpu_s',0)>lim}
if bad: print("excluded (workload, rep) with other CPU >",lim,"s:",sorted(bad))
runs=[r for r in runs if (r['workload'],r['rep']) not in bad]
by={}
for r in runs: by.setdefault((r['workload'],r['server']),[]).append(r)
servers=sorted({r['server'] for r in runs})
W=["seq-write","rand-write-new","rand-write-over","rand-read","rand-read-10s"]
print("| workload | server | n | IOPS | p50 µs | p99 µs | p99.9 µs | CPU µs/req |")
print("|---|---|---|---|---|---|---|---|")
for w in W:
    for s in servers:
        rs=by.get((w,s),[])
        if not rs: continue
        m=lambda k: st.median(r[k] for r in rs)
        print("| %s | %s | %d | %.0f | %.0f | %.0f | %.0f | %.2f |"%(w,s,len(rs),m('iops'),m('p50_us'),m('p99_us'),m('p999_us'),m('cpu_us_per_req')))
if base:
    for s in servers:
        if s==base: continue
        print()
        print("| workload | %s / %s: time/req | p99 | p99.9 | CPU/req |"%(s,base))
        print("|---|---|---|---|---|")
        for w in W:
            a={r['rep']:r for r in by.get((w,s),[])}; b={r['rep']:r for r in by.get((w,base),[])}
            reps=sorted(set(a)&set(b))
            if not reps: continue
            def rat(k,inv=False):
                xs=[(b[x][k]/a[x][k]) if inv else (a[x][k]/b[x][k]) for x in reps]
                return "%.2f (%.2f-%.2f)"%(st.median(xs),min(xs),max(xs))
            print("| %s | %s | %s | %s | %s |"%(w,rat('iops',True),rat('p99_us'),rat('p999_us'),rat('cpu_us_per_req')))
