# Two horizontal bar panels, one bar per case: CPU µs per request (left) and p99 latency (right).
# Shorter is better in both. Dashed line: the nginx reverse-proxy row, the reference of every ratio.
# Called by run.sh: gnuplot -e "dat='...'; out='...'; cpuref=N; p99ref=N; subtitle='...'" chart.gp
set terminal svg size 1250,600 dynamic enhanced font "Helvetica,13" background rgb "white"
set output out
set datafile separator "\t"
stats dat using 1 nooutput
n = STATS_records

set linetype 1 lc rgb "#9e9e9e"   # upstream alone
set linetype 2 lc rgb "#4a78b5"   # peers: nginx, HAProxy
set linetype 3 lc rgb "#e8772e"   # authgate
set style fill solid 0.9 border rgb "#404040"
set style textbox opaque noborder margins 1,1   # value labels stay readable over the dashed line
set yrange [n - 0.5 : -0.5]       # case (a) on top
set grid xtics lc rgb "#dddddd"
set border 3
set xtics nomirror
set ytics nomirror scale 0 noenhanced   # case names contain "_"
set offsets 0, graph 0.12, 0, 0   # room for the value labels
set xrange [0:*]
set bmargin 5
set multiplot layout 1,2 title "authgate vs nginx / HAProxy — ".subtitle font ",15" noenhanced
set label 10 "grey: upstream alone   blue: nginx / HAProxy   orange: authgate   dashed line: nginx reverse proxy (b)   labels: value (ratio to nginx)" \
    at screen 0.5, screen 0.03 center font ",12" noenhanced

set title "proxy CPU per request (µs, shorter is better)"
set lmargin 36
if (cpuref == cpuref) { set arrow 1 from cpuref, graph 0 to cpuref, graph 1 nohead dt 2 lw 1.5 lc rgb "#333333" }
plot dat using ($3 / 2):1:(0):($3):($1 - 0.38):($1 + 0.38):($5 + 1):ytic(2) \
        with boxxyerror lc variable notitle, \
     dat using ($3):1:6 with labels boxed left offset 0.4,0 noenhanced notitle

unset arrow 1
unset label 10
set title "p99 latency (ms, wrk 50 connections, shorter is better)"
set lmargin 2
set ytics format ""
set ytics ("" 0)
if (p99ref == p99ref) { set arrow 2 from p99ref, graph 0 to p99ref, graph 1 nohead dt 2 lw 1.5 lc rgb "#333333" }
plot dat using ($4 / 2):1:(0):($4):($1 - 0.38):($1 + 0.38):($5 + 1) \
        with boxxyerror lc variable notitle, \
     dat using ($4):1:7 with labels boxed left offset 0.4,0 noenhanced notitle
unset multiplot
