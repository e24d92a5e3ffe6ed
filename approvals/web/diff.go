package web

import (
	"fmt"
	"strings"

	"github.com/tollgatehq/tollgate/approvals/display"
)

// Limits of the diff shown for a Worker redeploy. A module may be 3 MiB;
// past these the page says how big the change is instead of showing it.
const (
	diffMaxLines   = 20_000 // lines per side
	diffMaxEdits   = 2_000  // inserted plus deleted lines
	diffContext    = 3      // unchanged lines kept around each change
	diffLineRunes  = 300    // a shown line is cut here
	diffShownLines = 2_000  // lines on the page at most
)

// Line kinds of a diff.
const (
	lineSame = "same"
	lineAdd  = "add"
	lineDel  = "del"
	lineSkip = "skip" // unchanged lines left out
)

// diffLine is one line of a unified diff, already sanitised for display.
type diffLine struct {
	Kind     string
	Old, New int // 1-based line numbers; 0 where the side has none
	Text     string
}

// changeView is a ScriptChange made ready for the page.
type changeView struct {
	ScriptChange
	Lines          []diffLine
	Added, Removed int
	Identical      bool
	TooBig         string // why no diff is shown
}

func newChangeView(ch *ScriptChange) *changeView {
	v := &changeView{ScriptChange: *ch}
	if ch.Missing != "" {
		for i, l := range splitLines(ch.New) {
			if i == diffShownLines {
				v.Lines = append(v.Lines, diffLine{Kind: lineSkip, Text: fmt.Sprintf("… %d more lines", len(splitLines(ch.New))-i)})
				break
			}
			v.Lines = append(v.Lines, diffLine{Kind: lineAdd, New: i + 1, Text: display.Text(l, diffLineRunes)})
		}
		v.Added = len(splitLines(ch.New))
		return v
	}
	if ch.Old == ch.New {
		v.Identical = true
		return v
	}
	a, b := splitLines(ch.Old), splitLines(ch.New)
	if len(a) > diffMaxLines || len(b) > diffMaxLines {
		v.TooBig = fmt.Sprintf("the modules have %d and %d lines, more than the %d a diff is shown for", len(a), len(b), diffMaxLines)
		return v
	}
	edits, ok := lineDiff(a, b, diffMaxEdits)
	if !ok {
		v.TooBig = fmt.Sprintf("more than %d lines differ", diffMaxEdits)
		return v
	}
	v.Lines, v.Added, v.Removed = unified(edits, a, b)
	return v
}

func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

// edit is one step of a line diff: keep a[i]/b[j], delete a[i] or insert b[j].
type edit struct {
	kind string
	i, j int
}

// lineDiff is Myers' O((N+M)·D) shortest edit script over lines, giving up
// (false) when more than maxD lines differ.
func lineDiff(a, b []string, maxD int) ([]edit, bool) {
	n, m := len(a), len(b)
	offset := maxD + 1
	v := make([]int, 2*offset+1)
	var trace [][]int
	found := false
	for d := 0; d <= maxD && !found; d++ {
		trace = append(trace, append([]int(nil), v...))
		for k := -d; k <= d; k += 2 {
			var x int
			if k == -d || (k != d && v[offset+k-1] < v[offset+k+1]) {
				x = v[offset+k+1]
			} else {
				x = v[offset+k-1] + 1
			}
			y := x - k
			for x < n && y < m && a[x] == b[y] {
				x++
				y++
			}
			v[offset+k] = x
			if x >= n && y >= m {
				found = true
				break
			}
		}
	}
	if !found {
		return nil, false
	}
	// Walk the trace back from (n, m).
	var rev []edit
	x, y := n, m
	for d := len(trace) - 1; d >= 0; d-- {
		vd := trace[d]
		k := x - y
		var prevK int
		if k == -d || (k != d && vd[offset+k-1] < vd[offset+k+1]) {
			prevK = k + 1
		} else {
			prevK = k - 1
		}
		prevX := vd[offset+prevK]
		prevY := prevX - prevK
		for x > prevX && y > prevY {
			x--
			y--
			rev = append(rev, edit{lineSame, x, y})
		}
		if d > 0 {
			if x == prevX {
				y--
				rev = append(rev, edit{lineAdd, x, y})
			} else {
				x--
				rev = append(rev, edit{lineDel, x, y})
			}
		}
	}
	for x > 0 && y > 0 {
		x--
		y--
		rev = append(rev, edit{lineSame, x, y})
	}
	out := make([]edit, len(rev))
	for i, e := range rev {
		out[len(rev)-1-i] = e
	}
	return out, true
}

// unified keeps diffContext unchanged lines around each change and folds the
// rest into skip lines.
func unified(edits []edit, a, b []string) ([]diffLine, int, int) {
	keep := make([]bool, len(edits))
	added, removed := 0, 0
	for i, e := range edits {
		if e.kind == lineSame {
			continue
		}
		if e.kind == lineAdd {
			added++
		} else {
			removed++
		}
		for j := max(0, i-diffContext); j <= min(len(edits)-1, i+diffContext); j++ {
			keep[j] = true
		}
	}
	var out []diffLine
	skipped := 0
	flush := func() {
		if skipped > 0 {
			out = append(out, diffLine{Kind: lineSkip, Text: fmt.Sprintf("… %d unchanged lines", skipped)})
			skipped = 0
		}
	}
	for i, e := range edits {
		if !keep[i] {
			skipped++
			continue
		}
		flush()
		if len(out) >= diffShownLines {
			out = append(out, diffLine{Kind: lineSkip, Text: "… the rest of the diff is not shown"})
			return out, added, removed
		}
		switch e.kind {
		case lineSame:
			out = append(out, diffLine{Kind: lineSame, Old: e.i + 1, New: e.j + 1, Text: display.Text(a[e.i], diffLineRunes)})
		case lineDel:
			out = append(out, diffLine{Kind: lineDel, Old: e.i + 1, Text: display.Text(a[e.i], diffLineRunes)})
		case lineAdd:
			out = append(out, diffLine{Kind: lineAdd, New: e.j + 1, Text: display.Text(b[e.j], diffLineRunes)})
		}
	}
	flush()
	return out, added, removed
}
