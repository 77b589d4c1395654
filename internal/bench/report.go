package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// PrintTable writes the results as a table: rates, the median ratio, each
// side's p50 and p99 per call ("-" where not measured) and the target.
func PrintTable(w io.Writer, results []Result) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PAIR\tWORKERS\tBASELINE /s\tSUBJECT /s\tRATIO\tBASE p50\tBASE p99\tSUBJ p50\tSUBJ p99\tTARGET\t")
	for _, r := range results {
		target, verdict := "-", ""
		if r.Pass != nil {
			target = fmt.Sprintf(">= %.2f", r.Target)
			verdict = map[bool]string{true: "pass", false: "MISS"}[*r.Pass]
		}
		workers := "-"
		if r.Workers > 0 {
			workers = fmt.Sprint(r.Workers)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.0f\t%.2f\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, workers, r.BaseRate, r.Rate, r.Ratio,
			formatLatency(r.BaseP50), formatLatency(r.BaseP99), formatLatency(r.P50), formatLatency(r.P99), target, verdict)
	}
	return tw.Flush()
}

// cpuProcesses is the order of PrintCPU's columns.
var cpuProcesses = []string{"this process", "broker", "mysql", "redis"}

// PrintCPU writes each side's CPU time per operation by process (µs), and
// what it implies where the processes share the machine's cores:
//
//   - CPU RATIO is the baseline's total over the subject's: the ratio a
//     machine whose cores are all busy shows;
//   - LIMIT is the best ratio a layer could reach on this machine: the
//     baseline's total over itself plus the work the subject cannot
//     avoid. Where a pair measures that work (a third line, named for
//     it), it is that line's total ("store alone": a guard's store calls
//     alone), or that total's excess over the baseline's (a line that did
//     the work together with the baseline's: "raw, reading" for the
//     unguarded consumer, "raw, row by hand" for the transactional
//     guard and Transact, "raw, rows by hand" for the drain); else it is
//     the servers' extra work on the subject side, this process's own
//     extra counted as nothing.
//
// It writes nothing when no CPU time was measured (off Linux).
func PrintCPU(w io.Writer, results []Result) error {
	var procs []string
	for _, p := range cpuProcesses {
		for _, r := range results {
			if _, ok := r.CPU[p]; ok {
				procs = append(procs, p)
				break
			}
		}
	}
	if len(procs) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "CPU µs PER OPERATION\tSIDE\t%s\tTOTAL\tCPU RATIO\tLIMIT\t\n", strings.ToUpper(strings.Join(procs, "\t")))
	us := func(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Microsecond)) }
	total := func(cpu map[string]time.Duration) (t time.Duration) {
		for _, p := range procs {
			t += cpu[p]
		}
		return t
	}
	line := func(name, side string, cpu map[string]time.Duration) {
		fmt.Fprintf(tw, "%s\t%s\t", name, side)
		for _, p := range procs {
			if d, ok := cpu[p]; ok {
				fmt.Fprintf(tw, "%s\t", us(d))
			} else {
				fmt.Fprint(tw, "-\t")
			}
		}
		fmt.Fprintf(tw, "%s\t", us(total(cpu)))
	}
	for _, r := range results {
		if r.CPU == nil {
			continue
		}
		base, subj := total(r.BaseCPU), total(r.CPU)
		own := cpuProcesses[0]
		unavoidable := max(0, (subj-r.CPU[own])-(base-r.BaseCPU[own]))
		if r.FloorCPU != nil {
			unavoidable = total(r.FloorCPU)
			if r.FloorWhole {
				unavoidable = max(0, unavoidable-base)
			}
		}
		line(r.Name, "baseline", r.BaseCPU)
		fmt.Fprintln(tw, "\t\t")
		line("", "subject", r.CPU)
		if subj > 0 {
			fmt.Fprintf(tw, "%.2f\t%.2f\t\n", float64(base)/float64(subj), float64(base)/float64(base+unavoidable))
		} else {
			fmt.Fprintln(tw, "-\t-\t")
		}
		if r.FloorCPU != nil {
			line("", r.Floor, r.FloorCPU)
			fmt.Fprintln(tw, "\t\t")
		}
	}
	return tw.Flush()
}

// formatLatency rounds d to three significant digits or so; "-" for zero.
func formatLatency(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(10 * time.Microsecond).String()
	default:
		return d.Round(10 * time.Millisecond).String()
	}
}

// WriteJSON writes the results as JSON (latencies in nanoseconds).
func WriteJSON(w io.Writer, results []Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(results)
}

// WriteSVG draws the median ratios as a horizontal bar chart, with each
// target marked and each side's p50 and p99 beside its bar.
func WriteSVG(w io.Writer, results []Result) error {
	const rowH, left, width, latW = 28, 300, 420, 330
	maxRatio := 1.5
	for _, r := range results {
		maxRatio = max(maxRatio, min(r.Ratio, 10))
	}
	x := func(v float64) float64 { return left + min(v, maxRatio)/maxRatio*width }
	var b strings.Builder
	h := rowH*len(results) + 40
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", left+width+80+latW, h)
	fmt.Fprintf(&b, `<text x="%d" y="16" font-weight="bold">subject / baseline (median ratio); | = target</text>`+"\n", left)
	fmt.Fprintf(&b, `<text x="%d" y="16" font-weight="bold">per call, subject vs baseline</text>`+"\n", left+width+80)
	fmt.Fprintf(&b, `<line x1="%.1f" y1="24" x2="%.1f" y2="%d" stroke="#999" stroke-dasharray="3,3"/>`+"\n", x(1), x(1), h-8)
	for i, r := range results {
		y := 28 + i*rowH
		color := "#6b8fc7"
		if r.Pass != nil {
			color = map[bool]string{true: "#5aa469", false: "#d9534f"}[*r.Pass]
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", left-8, y+15, xmlEscape(r.Name))
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="18" fill="%s"/>`+"\n", left, y+2, x(r.Ratio)-left, color)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d">%.2f</text>`+"\n", x(r.Ratio)+4, y+15, r.Ratio)
		if r.Target > 0 {
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="black" stroke-width="2"/>`+"\n", x(r.Target), y, x(r.Target), y+22)
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#444">p50 %s vs %s, p99 %s vs %s</text>`+"\n", left+width+80, y+15,
			formatLatency(r.P50), formatLatency(r.BaseP50), formatLatency(r.P99), formatLatency(r.BaseP99))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
