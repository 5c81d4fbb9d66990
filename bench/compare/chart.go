package main

import (
	"fmt"
	"iter"
	"maps"
	"math"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// medianLines groups samples into one line per key, in the order the keys first appear:
// at each x, the median msgs/s of the samples there, x ascending.
func medianLines[K comparable](samples []sample, key func(sample) K, x func(sample) int) iter.Seq2[K, plotter.XYs] {
	return func(yield func(K, plotter.XYs) bool) {
		var keys []K
		for _, s := range samples {
			if k := key(s); !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
		for _, k := range keys {
			rates := map[int][]float64{}
			for _, s := range samples {
				if key(s) == k {
					rates[x(s)] = append(rates[x(s)], s.MsgsPerSec)
				}
			}
			xs := slices.Sorted(maps.Keys(rates))
			pts := make(plotter.XYs, 0, len(xs))
			for _, v := range xs {
				pts = append(pts, plotter.XY{X: float64(v), Y: median(rates[v])})
			}
			if !yield(k, pts) {
				return
			}
		}
	}
}

// throughputChart plots the median msgs/s of each client and transport against the
// in-flight window, on a log x axis.
func throughputChart(path string, samples []sample) error {
	p := plot.New()
	p.Title.Text = "QoS 1 publish throughput vs in-flight window (mosquitto 2.0.11)"
	p.X.Label.Text = "in-flight window (mosquitto max_inflight_messages)"
	p.Y.Label.Text = "acknowledged messages/s"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = windowTicks{}
	p.Y.Tick.Marker = kTicks{}
	p.Legend.Top = false // bottom right: the lines rise to the right
	p.Legend.Left = false
	p.Legend.XOffs = -vg.Points(10)
	p.Legend.YOffs = vg.Points(10)
	p.Add(plotter.NewGrid())

	type key struct{ client, transport string }
	var lines []any
	for k, pts := range medianLines(samples, func(s sample) key { return key{s.Client, s.Transport} }, func(s sample) int { return s.Window }) {
		lines = append(lines, k.client+" "+k.transport, pts)
	}
	if err := plotutil.AddLinePoints(p, lines...); err != nil {
		return err
	}
	p.Y.Min = 0
	return p.Save(9*vg.Inch, 5.5*vg.Inch, path)
}

// latencyChart plots, per client and transport, the median p50, p99 and p99.9 latency
// at the same offered load, on a log y axis.
func latencyChart(path string, samples []sample, rate float64) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Publish → PUBACK latency at %.0f msgs/s offered to every client", rate)
	p.Y.Label.Text = "latency (log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = latencyTicks{}
	p.Legend.Top = true
	p.Add(plotter.NewGrid())

	type key struct{ client, transport string }
	var keys []key
	for _, s := range samples {
		if k := (key{s.Client, s.Transport}); !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	// Group by transport, then client, as the table does.
	slices.SortStableFunc(keys, func(a, b key) int {
		if a.transport != b.transport {
			if a.transport == "tcp" {
				return -1
			}
			return 1
		}
		return 0
	})
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.client + "\n" + k.transport
		var ss []sample
		for _, s := range samples {
			if s.Client == k.client && s.Transport == k.transport {
				ss = append(ss, s)
			}
		}
		if saturated(ss) {
			names[i] += " *"
			p.X.Label.Text = "* fell short of the offered rate (saturated): its latency includes queueing"
		}
	}
	percentiles := []struct {
		name  string
		get   func(sample) float64
		shape draw.GlyphDrawer
	}{
		{"p50", func(s sample) float64 { return s.P50us }, draw.CircleGlyph{}},
		{"p99", func(s sample) float64 { return s.P99us }, draw.TriangleGlyph{}},
		{"p99.9", func(s sample) float64 { return s.P999us }, draw.SquareGlyph{}},
	}
	lo, hi := math.Inf(1), math.Inf(-1) // of the plotted values
	for j, pc := range percentiles {
		pts := make(plotter.XYs, len(keys))
		for i, k := range keys {
			var v []float64
			for _, s := range samples {
				if s.Client == k.client && s.Transport == k.transport {
					v = append(v, pc.get(s))
				}
			}
			pts[i] = plotter.XY{X: float64(i) + float64(j-1)*0.15, Y: math.Max(1, median(v))}
			lo, hi = math.Min(lo, pts[i].Y), math.Max(hi, pts[i].Y)
		}
		sc, err := plotter.NewScatter(pts)
		if err != nil {
			return err
		}
		sc.GlyphStyle.Shape = pc.shape
		sc.GlyphStyle.Radius = vg.Points(4)
		sc.GlyphStyle.Color = plotutil.Color(j)
		p.Add(sc)
		p.Legend.Add(pc.name, sc)
	}
	// Whole decades, so that the log axis has ticks at both ends.
	if lo <= hi {
		p.Y.Min, p.Y.Max = math.Pow(10, math.Floor(math.Log10(lo))), math.Pow(10, math.Ceil(math.Log10(hi)))
	}
	p.NominalX(names...)
	p.X.Min, p.X.Max = -0.6, float64(len(keys))-0.4
	return p.Save(vg.Length(max(9, 1.3*float64(len(keys))))*vg.Inch, 5.5*vg.Inch, path)
}

// windowTicks marks the powers of ten and the swept windows' usual end, 65535.
type windowTicks struct{}

func (windowTicks) Ticks(lo, hi float64) []plot.Tick {
	var t []plot.Tick
	for _, v := range []float64{10, 20, 100, 1000, 10000, 65535} {
		if v >= lo && v <= hi {
			t = append(t, plot.Tick{Value: v, Label: fmt.Sprintf("%.0f", v)})
		}
	}
	return t
}

// kTicks labels msgs/s as e.g. "150k".
type kTicks struct{}

func (kTicks) Ticks(lo, hi float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ticks {
		if ticks[i].Label != "" {
			ticks[i].Label = fmt.Sprintf("%.0fk", ticks[i].Value/1e3)
		}
	}
	return ticks
}

// latencyTicks labels a log axis of microseconds as µs, ms and s.
type latencyTicks struct{}

func (latencyTicks) Ticks(lo, hi float64) []plot.Tick {
	ticks := plot.LogTicks{Prec: -1}.Ticks(lo, hi)
	for i := range ticks {
		if ticks[i].Label == "" {
			continue
		}
		switch v := ticks[i].Value; {
		case v >= 1e6:
			ticks[i].Label = fmt.Sprintf("%gs", v/1e6)
		case v >= 1e3:
			ticks[i].Label = fmt.Sprintf("%gms", v/1e3)
		default:
			ticks[i].Label = fmt.Sprintf("%gµs", v)
		}
	}
	return ticks
}

// poolChart plots the median msgs/s of each client and broker window against the number
// of connections (the pool mode). Written as SVG, text that the docs embed.
func poolChart(path string, samples []sample) error {
	p := plot.New()
	p.Title.Text = "QoS 1 publish throughput vs connections, one mosquitto 2.0.11 node per connection"
	p.X.Label.Text = "connections (WithConnections; raw: one writer per node)"
	p.Y.Label.Text = "acknowledged messages/s"
	p.X.Tick.Marker = intTicks{}
	p.Y.Tick.Marker = kTicks{}
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.XOffs = vg.Points(10)
	p.Legend.YOffs = -vg.Points(10)
	p.Add(plotter.NewGrid())

	type key struct {
		client      string
		maxInflight int
	}
	var lines []any
	maxConns, top := 1, 0.0
	for k, pts := range medianLines(samples, func(s sample) key { return key{s.Client, s.MaxInflight} }, func(s sample) int { return s.Conns }) {
		for _, pt := range pts {
			maxConns, top = max(maxConns, int(pt.X)), max(top, pt.Y)
		}
		lines = append(lines, fmt.Sprintf("%s, max_inflight %d", k.client, k.maxInflight), pts)
	}
	if err := plotutil.AddLinePoints(p, lines...); err != nil {
		return err
	}
	p.Y.Min, p.Y.Max = 0, 1.5*top // room above the lines for the legend
	p.X.Min, p.X.Max = 0.8, float64(maxConns)+0.2
	return p.Save(9*vg.Inch, 5.5*vg.Inch, path)
}

// intTicks marks whole numbers.
type intTicks struct{}

func (intTicks) Ticks(lo, hi float64) []plot.Tick {
	var t []plot.Tick
	for v := math.Ceil(lo); v <= hi; v++ {
		t = append(t, plot.Tick{Value: v, Label: fmt.Sprintf("%.0f", v)})
	}
	return t
}
