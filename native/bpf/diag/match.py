import re,sys
miss=[]
for l in open('diag.out'):
    m=re.search(r'sector=(\d+).*t_issue=(\d+) t_reissue=(\d+)',l)
    if m: miss.append(tuple(map(int,m.groups())))
ev={}
for l in open('trace.txt'):
    m=re.match(r'\s*(\S+)\s+\[(\d+)\]\s+(\S+)\s+([\d.]+): block_rq_complete: \S+ WS \(\) (\d+) \+',l)
    if m: ev.setdefault(int(m.group(5)),[]).append((float(m.group(4)),m.group(1),m.group(2),m.group(3)))
from collections import Counter
c=Counter()
for s,a,b in miss:
    hits=[e for e in ev.get(s,[]) if a/1e9<=e[0]<=b/1e9]
    for h in hits: print(s,h); c[re.sub(r'-\d+$','',h[1])+' '+h[3]]+=1
    if not hits: print(s,'no trace event in window')
print(c)
tot=Counter()
for s,l in ev.items():
    for e in l: tot[re.sub(r'-\d+$','',e[1])]+=1
print(tot.most_common(12))
