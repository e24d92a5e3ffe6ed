package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/ledger/money"
	"github.com/tollgatehq/tollgate/server"
)

// spendJSON is `tollgate spend --json`.
type spendJSON struct {
	Since time.Time       `json:"since"`
	By    string          `json:"by"`
	Lines []spendLineJSON `json:"lines"`
	Total []spendLineJSON `json:"total"` // one line per currency
}

type spendLineJSON struct {
	Key        string `json:"key"`
	Currency   string `json:"currency"`
	Spent      string `json:"spent"`
	Held       string `json:"held"`
	Operations int    `json:"operations"`
}

// runSpend reports what was spent and is held, with or without budgets.
func runSpend(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlagSet("spend", "show what was spent (settled) and is held, by agent, team or day, whether or not budgets exist")
	cf := addConfigFlags(fs, ledgerSettings...)
	since := fs.String("since", "7d", "how far back: days (30d), a duration (24h) or a date (2026-11-01)")
	by := fs.String("by", ledger.ByAgent, "group by agent, team or day (UTC)")
	asJSON := fs.Bool("json", false, "print as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("spend takes no arguments, got %q", fs.Args())}
	}
	from, err := sinceFor(*since, time.Now().UTC())
	if err != nil {
		return usageError{err.Error()}
	}
	switch *by {
	case ledger.ByAgent, ledger.ByTeam, ledger.ByDay:
	default:
		return usageError{fmt.Sprintf("--by %q: agent, team or day", *by)}
	}
	return onLedger(ctx, cf, reads, func(_ server.Config, db *ledger.DB) error {
		lines, err := db.SpendReport(ctx, from, *by)
		if err != nil {
			return err
		}
		rep := spendJSON{Since: from, By: *by, Lines: []spendLineJSON{}, Total: []spendLineJSON{}}
		total := map[string]*ledger.SpendLine{} // by currency
		var currencies []string
		for _, l := range lines {
			rep.Lines = append(rep.Lines, lineJSON(l))
			t := total[l.Spent.Currency]
			if t == nil {
				t = &ledger.SpendLine{Key: "total", Spent: money.Money{Currency: l.Spent.Currency}, Held: money.Money{Currency: l.Spent.Currency}}
				total[l.Spent.Currency] = t
				currencies = append(currencies, l.Spent.Currency)
			}
			// Sums of what the ledger already holds in int64 micro-units.
			t.Spent.Micros += l.Spent.Micros
			t.Held.Micros += l.Held.Micros
			t.Operations += l.Operations
		}
		for _, c := range currencies {
			rep.Total = append(rep.Total, lineJSON(*total[c]))
		}
		if *asJSON {
			return printJSON(out, rep)
		}
		fmt.Fprintf(out, "spend since %s, by %s\n", from.UTC().Format(time.RFC3339), *by)
		if len(lines) == 0 {
			fmt.Fprintln(out, "nothing spent or held")
			return nil
		}
		var rows [][]string
		for _, l := range append(rep.Lines, rep.Total...) {
			rows = append(rows, []string{l.Key, l.Spent + " " + l.Currency, l.Held + " " + l.Currency, strconv.Itoa(l.Operations)})
		}
		return table(out, []string{strings.ToUpper(*by), "SPENT", "HELD", "OPERATIONS"}, rows)
	})
}

func lineJSON(l ledger.SpendLine) spendLineJSON {
	return spendLineJSON{Key: l.Key, Currency: l.Spent.Currency, Spent: l.Spent.Decimal(), Held: l.Held.Decimal(), Operations: l.Operations}
}

// sinceFor reads --since as audit export does (a duration, a date or an
// RFC 3339 time), or as a whole number of days such as 30d.
func sinceFor(s string, now time.Time) (time.Time, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days <= 0 || days > 3660 {
			return time.Time{}, fmt.Errorf("--since %q: a whole number of days from 1 to 3660, a duration such as 24h, or a date", s)
		}
		return now.AddDate(0, 0, -days), nil
	}
	return parseSince(s)
}
