package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// Sweep chart geometry: panels in rows of sweepCols, below a header.
const (
	sweepCols              = 3
	panelW, panelH, header = 300, 200, 44
	plotL, plotR           = 56, 16 // plot margins inside a panel
	plotT, plotB           = 40, 28
)

// WriteSweepSVG draws results from [Sweep] as one small chart per pair:
// throughput (per second) against workers, the subject as a solid line
// and the baseline dashed, workers spaced evenly in the order given.
func WriteSweepSVG(w io.Writer, results []Result) error {
	var names []string
	var counts []int
	for _, r := range results {
		if !slices.Contains(names, r.Name) {
			names = append(names, r.Name)
		}
		if !slices.Contains(counts, r.Workers) {
			counts = append(counts, r.Workers)
		}
	}
	slices.Sort(counts)
	rows := (len(names) + sweepCols - 1) / sweepCols
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n",
		sweepCols*panelW, header+rows*panelH)
	b.WriteString(`<text x="10" y="18" font-size="13" font-weight="bold">throughput (/s) against workers, per pair</text>` + "\n")
	b.WriteString(`<line x1="10" y1="32" x2="34" y2="32" stroke="#3b6fb6" stroke-width="2"/><text x="38" y="36">subject</text>` + "\n")
	b.WriteString(`<line x1="100" y1="32" x2="124" y2="32" stroke="#888" stroke-width="2" stroke-dasharray="4,3"/><text x="128" y="36">baseline</text>` + "\n")
	for i, name := range names {
		var rs []Result
		for _, r := range results {
			if r.Name == name {
				rs = append(rs, r)
			}
		}
		sweepPanel(&b, rs, counts, (i%sweepCols)*panelW, header+(i/sweepCols)*panelH)
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// sweepPanel draws one pair's chart with its top left corner at px, py.
func sweepPanel(b *strings.Builder, rs []Result, counts []int, px, py int) {
	x0, x1 := float64(px+plotL), float64(px+panelW-plotR)
	y0, y1 := float64(py+panelH-plotB), float64(py+plotT)
	top := 1.0
	for _, r := range rs {
		top = max(top, r.BaseRate, r.Rate)
	}
	top *= 1.1
	x := func(workers int) float64 {
		if len(counts) < 2 {
			return (x0 + x1) / 2
		}
		return x0 + float64(slices.Index(counts, workers))*(x1-x0)/float64(len(counts)-1)
	}
	y := func(rate float64) float64 { return y0 - rate/top*(y0-y1) }
	fmt.Fprintf(b, `<text x="%d" y="%d" font-weight="bold">%s</text>`+"\n", px+10, py+14, xmlEscape(rs[0].Name))
	fmt.Fprintf(b, `<text x="%d" y="%d" font-size="9" fill="#555">%s vs %s</text>`+"\n", px+10, py+28, xmlEscape(rs[0].Subject), xmlEscape(rs[0].Baseline))
	fmt.Fprintf(b, `<path d="M%.1f %.1f V%.1f H%.1f" fill="none" stroke="#333"/>`+"\n", x0, y1, y0, x1)
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", x0-4, y1+4, compactRate(top))
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end">0</text>`+"\n", x0-4, y0+4)
	for _, c := range counts {
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%d</text>`+"\n", x(c), y0+14, c)
	}
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#555">workers</text>`+"\n", (x0+x1)/2, y0+26)
	var base, subject []string
	for _, r := range rs {
		base = append(base, fmt.Sprintf("%.1f,%.1f", x(r.Workers), y(r.BaseRate)))
		subject = append(subject, fmt.Sprintf("%.1f,%.1f", x(r.Workers), y(r.Rate)))
		fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="3" fill="#888"/>`+"\n", x(r.Workers), y(r.BaseRate))
		fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="3" fill="#3b6fb6"/>`+"\n", x(r.Workers), y(r.Rate))
	}
	fmt.Fprintf(b, `<polyline points="%s" fill="none" stroke="#888" stroke-width="2" stroke-dasharray="4,3"/>`+"\n", strings.Join(base, " "))
	fmt.Fprintf(b, `<polyline points="%s" fill="none" stroke="#3b6fb6" stroke-width="2"/>`+"\n", strings.Join(subject, " "))
}

// compactRate writes a rate as 950, 12.3k or 1.2M.
func compactRate(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}
