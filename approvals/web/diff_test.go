package web

import (
	"strings"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/ledger/money"
)

// apply rebuilds b from a and an edit script, to check the script.
func apply(t *testing.T, a, b []string, edits []edit) []string {
	t.Helper()
	var out []string
	i := 0
	for _, e := range edits {
		switch e.kind {
		case lineSame:
			if a[e.i] != b[e.j] || e.i != i {
				t.Fatalf("keep of a[%d]=%q as b[%d]=%q out of step", e.i, a[e.i], e.j, b[e.j])
			}
			out = append(out, a[e.i])
			i++
		case lineDel:
			if e.i != i {
				t.Fatalf("delete of a[%d] out of step (at %d)", e.i, i)
			}
			i++
		case lineAdd:
			out = append(out, b[e.j])
		}
	}
	if i != len(a) {
		t.Fatalf("the script used %d of %d old lines", i, len(a))
	}
	return out
}

func TestLineDiff(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		a, b        string
		add, remove int
	}{
		{"same", "a\nb\nc", "a\nb\nc", 0, 0},
		{"one changed", "a\nb\nc", "a\nB\nc", 1, 1},
		{"appended", "a\nb", "a\nb\nc\nd", 2, 0},
		{"removed", "a\nb\nc\nd", "b\nd", 0, 2},
		{"from nothing", "", "x\ny", 2, 0},
		{"to nothing", "x\ny", "", 0, 2},
		{"swapped", "a\nb", "b\na", 1, 1},
	}
	for _, tt := range tests {
		a, b := splitLines(tt.a), splitLines(tt.b)
		edits, ok := lineDiff(a, b, 100)
		if !ok {
			t.Fatalf("%s: gave up", tt.name)
		}
		if got := apply(t, a, b, edits); strings.Join(got, "\n") != strings.Join(b, "\n") {
			t.Fatalf("%s: rebuilt %q, want %q", tt.name, got, b)
		}
		_, add, rm := unified(edits, a, b)
		if add != tt.add || rm != tt.remove {
			t.Errorf("%s: +%d -%d, want +%d -%d", tt.name, add, rm, tt.add, tt.remove)
		}
	}
	if _, ok := lineDiff(strings.Split(strings.Repeat("a\n", 50), "\n"), strings.Split(strings.Repeat("b\n", 50), "\n"), 10); ok {
		t.Error("a diff past the limit was not refused")
	}
}

func TestChangeView(t *testing.T) {
	t.Parallel()
	old := strings.Repeat("same line\n", 20) + "return 'ok'\n" + strings.Repeat("tail\n", 20)
	nw := strings.Replace(old, "'ok'", "'ok, v2'", 1)
	v := newChangeView(&ScriptChange{Old: old, New: nw, From: "live"})
	if v.Added != 1 || v.Removed != 1 || v.Identical || v.TooBig != "" {
		t.Fatalf("view %+v", v)
	}
	// Three lines of context around the change, the rest folded.
	var kinds []string
	for _, l := range v.Lines {
		kinds = append(kinds, l.Kind)
	}
	want := "skip same same same del add same same same skip"
	if got := strings.Join(kinds, " "); got != want {
		t.Errorf("lines %q, want %q", got, want)
	}
	if got := newChangeView(&ScriptChange{Old: "x", New: "x"}); !got.Identical {
		t.Error("identical modules not said to be identical")
	}
	if got := newChangeView(&ScriptChange{New: "a\nb", Missing: "new"}); got.Added != 2 || len(got.Lines) != 2 {
		t.Errorf("new script %+v", got)
	}
	big := strings.Repeat("x\n", diffMaxLines+1)
	if got := newChangeView(&ScriptChange{Old: "y", New: big}); got.TooBig == "" {
		t.Error("an oversized module was diffed")
	}
	// Lines are sanitised for display.
	got := newChangeView(&ScriptChange{Old: "a", New: "a\n\u202eevil\x1b[0m"})
	for _, l := range got.Lines {
		if strings.ContainsAny(l.Text, "\u202e\x1b") {
			t.Errorf("diff line %q is not sanitised", l.Text)
		}
	}
}

// FuzzLineDiff: the edit script always rebuilds the new module from the old.
func FuzzLineDiff(f *testing.F) {
	f.Add("a\nb\nc", "a\nc\nd")
	f.Add("", "x")
	f.Add("x\nx\nx", "x")
	f.Fuzz(func(t *testing.T, a, b string) {
		al, bl := splitLines(a), splitLines(b)
		if len(al) > 200 || len(bl) > 200 {
			return
		}
		edits, ok := lineDiff(al, bl, 400)
		if !ok {
			t.Fatalf("gave up on %d and %d lines", len(al), len(bl))
		}
		if got := apply(t, al, bl, edits); strings.Join(got, "\n") != strings.Join(bl, "\n") {
			t.Fatalf("rebuilt %q, want %q", got, bl)
		}
	})
}

func TestSpendCharts(t *testing.T) {
	t.Parallel()
	for in, want := range map[int64]int64{0: 1_000_000, 999_999: 1_000_000, 1_500_000: 2_000_000, 12_180_000: 20_000_000, 50_000_000: 50_000_000, 50_000_001: 100_000_000} {
		if got := niceCeiling(in); got != want {
			t.Errorf("niceCeiling(%d) = %d, want %d", in, got, want)
		}
	}
	since := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	cs := spendCharts([]DaySpend{
		{Day: since.AddDate(0, 0, 2), Amount: money.Money{Micros: 12_180_000, Currency: "USD"}, Operations: 1},
		{Day: since.AddDate(0, 0, 2), Amount: money.Money{Micros: 5_000_000, Currency: "USD"}, Operations: 1},
		{Day: since.AddDate(0, 0, 5), Amount: money.Money{Micros: 3_000_000, Currency: "EUR"}, Operations: 1},
	}, since, 30)
	if len(cs) != 2 || cs[0].Currency != "EUR" || cs[1].Currency != "USD" {
		t.Fatalf("charts %+v", cs)
	}
	usd := cs[1]
	if len(usd.Columns) != 30 || usd.Total.Micros != 17_180_000 || usd.Max.Micros != 20_000_000 {
		t.Fatalf("USD chart: %d columns, total %s, max %s", len(usd.Columns), usd.Total, usd.Max)
	}
	c := usd.Columns[2]
	if c.Operations != 2 || c.H <= 0 || c.Y+c.H != chartTop+chartPlotH || usd.Columns[3].H != 0 {
		t.Errorf("column %+v", c)
	}
	bv := budgetViews([]Budget{{Limit: money.Money{Micros: 100}, Spent: money.Money{Micros: 25}, Held: money.Money{Micros: 25}}})
	if bv[0].SpentW != barWidth/4 || bv[0].HeldW != barWidth/4 || bv[0].LeftW != barWidth/2 || bv[0].Over {
		t.Errorf("budget bar %+v", bv[0])
	}
}
