package web

import (
	"fmt"
	"slices"
	"time"

	"github.com/tollgatehq/tollgate/ledger/money"
)

// The SVG charts are laid out here, in user units of their viewBox, and drawn
// by budgets.html: the page needs no script and no external asset.

// budgetView is one budget with its bar: spent, held and left of the limit,
// as fractions of barWidth.
type budgetView struct {
	Budget
	SpentW, HeldW, LeftW float64
	HeldX, LeftX         float64
	Over                 bool // spent and held exceed the limit (a lowered limit)
}

const barWidth = 600.0

func budgetViews(bs []Budget) []budgetView {
	out := make([]budgetView, 0, len(bs))
	for _, b := range bs {
		v := budgetView{Budget: b}
		lim := float64(b.Limit.Micros)
		used := float64(b.Spent.Micros + b.Held.Micros)
		switch {
		case lim <= 0:
			v.Over = used > 0
			v.SpentW = barWidth
			if used > 0 {
				v.SpentW = barWidth * float64(b.Spent.Micros) / used
				v.HeldW = barWidth - v.SpentW
			}
		case used > lim:
			v.Over = true
			v.SpentW = barWidth * float64(b.Spent.Micros) / used
			v.HeldW = barWidth - v.SpentW
		default:
			v.SpentW = barWidth * float64(b.Spent.Micros) / lim
			v.HeldW = barWidth * float64(b.Held.Micros) / lim
			v.LeftW = barWidth - v.SpentW - v.HeldW
		}
		v.HeldX = v.SpentW
		v.LeftX = v.SpentW + v.HeldW
		out = append(out, v)
	}
	return out
}

// spendChart is one currency's daily spend as columns.
type spendChart struct {
	Currency string
	Total    money.Money
	Max      money.Money // the top of the scale
	Columns  []spendColumn
	Ticks    []spendTick
	Width    float64
	Height   float64
	Right    float64 // the plot's right edge
}

type spendColumn struct {
	X, Y, W, H float64
	Day        time.Time
	Amount     money.Money
	Operations int
	Label      bool // the day is labelled under the axis
	LabelX     float64
}

type spendTick struct {
	Y     float64
	Label string
}

// Chart geometry: the plot area sits right of the scale labels and above
// the day labels.
const (
	chartLeft   = 70.0
	chartTop    = 10.0
	chartPlotH  = 160.0
	chartColW   = 20.0
	chartGap    = 4.0
	chartBottom = 30.0
)

// spendCharts lays out one chart per currency over days days from since.
func spendCharts(ds []DaySpend, since time.Time, days int) []spendChart {
	byCur := map[string]map[time.Time]DaySpend{}
	for _, d := range ds {
		cur := d.Amount.Currency
		if byCur[cur] == nil {
			byCur[cur] = map[time.Time]DaySpend{}
		}
		day := d.Day.UTC().Truncate(24 * time.Hour)
		prev := byCur[cur][day]
		prev.Day = day
		prev.Amount = money.Money{Micros: prev.Amount.Micros + d.Amount.Micros, Currency: cur}
		prev.Operations += d.Operations
		byCur[cur][day] = prev
	}
	if len(byCur) == 0 {
		byCur["USD"] = map[time.Time]DaySpend{}
	}
	curs := make([]string, 0, len(byCur))
	for c := range byCur {
		curs = append(curs, c)
	}
	slices.Sort(curs)
	var out []spendChart
	for _, cur := range curs {
		right := chartLeft + float64(days)*(chartColW+chartGap)
		c := spendChart{Currency: cur, Total: money.Money{Currency: cur}, Width: right + 10, Height: chartTop + chartPlotH + chartBottom, Right: right}
		var top int64
		for _, d := range byCur[cur] {
			top = max(top, d.Amount.Micros)
			c.Total.Micros += d.Amount.Micros
		}
		top = niceCeiling(top)
		c.Max = money.Money{Micros: top, Currency: cur}
		for i := range 5 {
			v := top * int64(i) / 4
			c.Ticks = append(c.Ticks, spendTick{Y: chartTop + chartPlotH - chartPlotH*float64(i)/4, Label: money.Money{Micros: v, Currency: cur}.String()})
		}
		for i := range days {
			day := since.AddDate(0, 0, i)
			d := byCur[cur][day]
			h := 0.0
			if top > 0 {
				h = chartPlotH * float64(d.Amount.Micros) / float64(top)
			}
			x := chartLeft + float64(i)*(chartColW+chartGap)
			c.Columns = append(c.Columns, spendColumn{
				X: x, Y: chartTop + chartPlotH - h, W: chartColW, H: h,
				Day: day, Amount: money.Money{Micros: d.Amount.Micros, Currency: cur}, Operations: d.Operations,
				Label: i%7 == 0 || i == days-1, LabelX: x + chartColW/2,
			})
		}
		out = append(out, c)
	}
	return out
}

// niceCeiling rounds a scale maximum up to 1, 2 or 5 times a power of ten
// (in whole currency units; at least 1).
func niceCeiling(micros int64) int64 {
	const unit = 1_000_000
	if micros <= unit {
		return unit
	}
	step := int64(unit)
	for {
		for _, f := range []int64{1, 2, 5} {
			if f*step >= micros {
				return f * step
			}
		}
		if step > (1<<62)/10 {
			return micros
		}
		step *= 10
	}
}

// dayLabel is a column's date under the axis.
func dayLabel(t time.Time) string { return t.Format("Jan 2") }

// columnTitle is a column's tooltip.
func columnTitle(c spendColumn) string {
	return fmt.Sprintf("%s: %s in %d operation(s)", c.Day.Format("2006-01-02"), c.Amount, c.Operations)
}
