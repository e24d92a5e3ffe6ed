package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/tollgatehq/tollgate/approvals/display"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/server"
)

func runAudit(ctx context.Context, args []string, out io.Writer) error {
	return subcommand("audit", args, map[string]func([]string) error{
		"verify": func(args []string) error {
			fs := newFlagSet("audit verify", "recompute the hash chain and report the first broken link")
			cf := addConfigFlags(fs, dbSetting)
			asJSON := fs.Bool("json", false, "print as JSON")
			if err := fs.Parse(args); err != nil {
				return err
			}
			return onLedger(ctx, cf, false, func(_ server.Config, db *ledger.DB) error {
				rep, err := db.Verify(ctx)
				if err != nil {
					return err
				}
				if *asJSON {
					if err := printJSON(out, rep); err != nil {
						return err
					}
				} else if rep.OK {
					fmt.Fprintf(out, "audit chain intact: %d events verified\n", rep.Checked)
				} else {
					fmt.Fprintf(out, "audit chain BROKEN at event %d: %s (%d events checked before it)\n", rep.BrokenSeq, rep.Reason, rep.Checked)
				}
				if !rep.OK {
					return errors.New("audit chain verification failed")
				}
				return nil
			})
		},
		"export": func(args []string) error {
			fs := newFlagSet("audit export", "stream audit events as JSON lines")
			cf := addConfigFlags(fs, dbSetting)
			since := fs.String("since", "", "only events at or after this time (RFC 3339, a date, or a duration ago such as 24h)")
			format := fs.String("format", "jsonl", "jsonl (one event per line)")
			op := fs.String("operation", "", "only events of this operation")
			if err := fs.Parse(args); err != nil {
				return err
			}
			if *format != "jsonl" {
				return usageError{fmt.Sprintf("--format %q: only jsonl is supported", *format)}
			}
			q := ledger.EventQuery{OperationID: *op}
			if *since != "" {
				t, err := parseSince(*since)
				if err != nil {
					return usageError{err.Error()}
				}
				q.Since = t
			}
			return onLedger(ctx, cf, false, func(_ server.Config, db *ledger.DB) error {
				enc := json.NewEncoder(out)
				return db.Events(ctx, q, func(e ledger.Event) error { return enc.Encode(e) })
			})
		},
		"show": func(args []string) error {
			fs := newFlagSet("audit show OPERATION_ID", "print one operation's story as a timeline")
			cf := addConfigFlags(fs, dbSetting)
			asJSON := fs.Bool("json", false, "print as JSON")
			id, err := parseNamed(fs, args)
			if err != nil {
				return err
			}
			if id == "" {
				return usageError{"usage: tollgate audit show OPERATION_ID"}
			}
			return onLedger(ctx, cf, false, func(_ server.Config, db *ledger.DB) error {
				op, err := db.Operation(ctx, id)
				if err != nil {
					return fmt.Errorf("operation %s: %w", id, err)
				}
				var events []ledger.Event
				if err := db.Events(ctx, ledger.EventQuery{OperationID: id}, func(e ledger.Event) error {
					events = append(events, e)
					return nil
				}); err != nil {
					return err
				}
				if *asJSON {
					return printJSON(out, map[string]any{"operation": op, "events": events})
				}
				line := func(s string) string { return display.Text(s, 1000) }
				fmt.Fprintf(out, "%s  %s %s by agent %s (team %s)  now %s\n", line(op.ID), line(op.Tool), line(op.Resource), line(op.Agent), line(op.Team), op.State)
				fmt.Fprintf(out, "reason: %s\n\n", line(op.Reason))
				var t [][]string
				start := op.CreatedAt
				for _, e := range events {
					t = append(t, []string{e.At.UTC().Format("15:04:05.000"), "+" + e.At.Sub(start).Round(time.Millisecond).String(), e.Type, e.Actor, server.EventDetail(e)})
				}
				return table(out, []string{"TIME", "ELAPSED", "EVENT", "ACTOR", "DETAIL"}, t)
			})
		},
	}, []string{"verify", "export", "show"})
}

func parseSince(s string) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, time.DateTime, time.DateOnly} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("--since %q: RFC 3339 time, YYYY-MM-DD, or a duration such as 24h", s)
}
