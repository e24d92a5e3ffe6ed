package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tollgatehq/tollgate/approvals/display"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/server"
)

func runAudit(ctx context.Context, args []string, out io.Writer) error {
	return subcommand("audit", args, map[string]func([]string) error{
		"verify": func(args []string) error {
			fs := newFlagSet("audit verify", "recompute the chain (hashes, MACs, signed heads) and report the first bad event; or check an export bundle offline")
			cf := addConfigFlags(fs, slices.Concat(ledgerSettings, []setting{checkpointFileSetting})...)
			var anchors stringList
			fs.Var(&anchors, "anchor", "a saved head (tollgate audit head --json > FILE); events at or before it must all be there, unchanged (repeatable)")
			bundle := fs.String("bundle", "", "check this export bundle offline instead of the database (- for stdin)")
			pub := fs.String("public-key", "", "with --bundle: the public key the bundle must be signed by (base64, from `tollgate audit head --json`); default: the audit key file's, when there is one")
			asJSON := fs.Bool("json", false, "print as JSON")
			if err := fs.Parse(args); err != nil {
				return err
			}
			if fs.NArg() > 0 {
				return usageError{fmt.Sprintf("audit verify takes no arguments, got %q", fs.Args())}
			}
			if *bundle != "" {
				if len(anchors) > 0 {
					return usageError{"--anchor checks the database; a bundle carries its own signed head"}
				}
				return verifyBundle(ctx, cf, *bundle, *pub, *asJSON, out)
			}
			if *pub != "" {
				return usageError{"--public-key goes with --bundle; the database is checked with the audit key file"}
			}
			return onLedger(ctx, cf, reads, func(cfg server.Config, db *ledger.DB) error {
				heads, err := readAnchors(anchors, cfg.Audit.CheckpointFile)
				if err != nil {
					return err
				}
				rep, err := db.Verify(ctx, heads...)
				if err != nil {
					return err
				}
				if *asJSON {
					if err := printJSON(out, rep); err != nil {
						return err
					}
				} else {
					printVerify(out, rep)
				}
				if !rep.OK {
					return errors.New("audit chain verification failed")
				}
				return nil
			})
		},
		"head": func(args []string) error {
			fs := newFlagSet("audit head", "verify the chain and print its head signed by the audit key: save it (--json) as an anchor for audit verify")
			cf := addConfigFlags(fs, ledgerSettings...)
			asJSON := fs.Bool("json", false, "print as JSON (the form --anchor reads)")
			if err := fs.Parse(args); err != nil {
				return err
			}
			return onLedger(ctx, cf, signs, func(_ server.Config, db *ledger.DB) error {
				h, err := db.Head(ctx)
				if err != nil {
					return err
				}
				if *asJSON {
					return printJSON(out, h)
				}
				return table(out, []string{"SEQ", "HASH", "AT", "KEY ID", "SIGNATURE"},
					[][]string{{strconv.FormatInt(h.Seq, 10), h.Hash, h.At.Format(time.RFC3339Nano), h.KeyID, h.Signature}})
			})
		},
		"export": func(args []string) error {
			fs := newFlagSet("audit export", "write a signed bundle of the audit trail (verify it offline with audit verify --bundle), or raw JSON lines")
			cf := addConfigFlags(fs, ledgerSettings...)
			since := fs.String("since", "", "only events at or after this time (RFC 3339, a date, or a duration ago such as 24h)")
			format := fs.String("format", "bundle", "bundle (signed, verifiable offline) or jsonl (one event per line)")
			op := fs.String("operation", "", "with --format jsonl: only events of this operation")
			if err := fs.Parse(args); err != nil {
				return err
			}
			var t time.Time
			if *since != "" {
				var err error
				if t, err = parseSince(*since); err != nil {
					return usageError{err.Error()}
				}
			}
			switch *format {
			case "bundle":
				if *op != "" {
					return usageError{"--operation picks events out of the chain; a bundle holds every event from --since on so it can be verified: use --format jsonl"}
				}
				return onLedger(ctx, cf, signs, func(_ server.Config, db *ledger.DB) error {
					return db.ExportBundle(ctx, out, t)
				})
			case "jsonl":
				return onLedger(ctx, cf, reads, func(_ server.Config, db *ledger.DB) error {
					enc := json.NewEncoder(out)
					enc.SetEscapeHTML(false) // the data as it was hashed
					return db.Events(ctx, ledger.EventQuery{OperationID: *op, Since: t}, func(e ledger.Event) error { return enc.Encode(e) })
				})
			}
			return usageError{fmt.Sprintf("--format %q: use bundle or jsonl", *format)}
		},
		"adopt-key": func(args []string) error {
			fs := newFlagSet("audit adopt-key", "key an old database's chain with an audit key that already existed: its current head is signed as the boundary (events up to it keep their plain hashes)")
			cf := addConfigFlags(fs, ledgerSettings...)
			if err := fs.Parse(args); err != nil {
				return err
			}
			return onLedger(ctx, cf, appends, func(cfg server.Config, db *ledger.DB) error {
				rep, err := db.Verify(ctx)
				if err != nil {
					return err
				}
				printVerify(out, rep)
				if !rep.OK {
					return errors.New("audit chain verification failed")
				}
				return nil
			}, ledger.WithAuditKeyAdoption())
		},
		"show": func(args []string) error {
			fs := newFlagSet("audit show OPERATION_ID", "print one operation's story as a timeline")
			cf := addConfigFlags(fs, ledgerSettings...)
			asJSON := fs.Bool("json", false, "print as JSON")
			id, err := parseNamed(fs, args)
			if err != nil {
				return err
			}
			if id == "" {
				return usageError{"usage: tollgate audit show OPERATION_ID"}
			}
			return onLedger(ctx, cf, reads, func(_ server.Config, db *ledger.DB) error {
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
	}, []string{"verify", "head", "export", "show", "adopt-key"})
}

// stringList is a flag that may be given several times.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// readAnchors reads the saved heads of every --anchor file and of the
// checkpoint file (when it is configured and exists).
func readAnchors(files []string, checkpointFile string) ([]ledger.Anchor, error) {
	var out []ledger.Anchor
	read := func(path, what string) error {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		defer f.Close()
		heads, err := ledger.ReadHeads(io.LimitReader(f, 64<<20))
		if err != nil {
			return fmt.Errorf("%s %s: %w", what, path, err)
		}
		for i, h := range heads {
			src := what + " " + path
			if len(heads) > 1 {
				src += fmt.Sprintf(" (head %d)", i+1)
			}
			out = append(out, ledger.Anchor{Source: src, Head: h})
		}
		return nil
	}
	for _, a := range files {
		if err := read(a, "anchor"); err != nil {
			return nil, err
		}
	}
	if checkpointFile != "" {
		if _, err := os.Stat(checkpointFile); err == nil {
			if err := read(checkpointFile, "checkpoint file"); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

func printVerify(out io.Writer, rep ledger.VerifyReport) {
	switch {
	case !rep.OK && rep.BrokenSeq > 0:
		fmt.Fprintf(out, "audit chain BROKEN at event %d: %s (%d events checked before it)\n", rep.BrokenSeq, rep.Reason, rep.Checked)
	case !rep.OK:
		fmt.Fprintf(out, "audit chain BROKEN: %s\n", rep.Reason)
	case rep.KeyID == "":
		fmt.Fprintf(out, "audit chain intact: %d events verified (plain hashes only: the chain has no audit key yet; the next tollgate that writes to it keys it)\n", rep.Checked)
	default:
		fmt.Fprintf(out, "audit chain intact: %d events verified, keyed with audit key %s", rep.Checked, rep.KeyID)
		if rep.Boundary > 0 {
			fmt.Fprintf(out, " (events 1 to %d keep the plain hashes they had before the key)", rep.Boundary)
		}
		fmt.Fprintf(out, "; %d signed head(s) matched\n", rep.Heads)
	}
}

// verifyBundle checks an export bundle with no database: pinned to
// --public-key, else to the audit key file when there is one.
func verifyBundle(_ context.Context, cf *configFlags, path, pubText string, asJSON bool, out io.Writer) error {
	var pin ed25519.PublicKey
	pinnedBy := ""
	if pubText != "" {
		var err error
		if pin, err = ledger.ParsePublicKey(pubText); err != nil {
			return usageError{"--public-key: " + err.Error()}
		}
		pinnedBy = "--public-key"
	} else {
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		if k, err := loadAuditKey(cfg, reads); err != nil {
			return err
		} else if k != nil {
			pin, pinnedBy = k.PublicKey(), "the audit key "+k.Path()
		}
	}
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	rep, err := ledger.VerifyBundle(r, pin)
	if err != nil {
		return err
	}
	switch {
	case asJSON:
		if err := printJSON(out, rep); err != nil {
			return err
		}
	case !rep.OK:
		printVerify(out, rep.VerifyReport)
	case rep.Pinned:
		fmt.Fprintf(out, "bundle intact: events %d to %d (%d), signed by audit key %s, which is %s\n", rep.FromSeq, rep.HeadSeq, rep.Checked, rep.KeyID, pinnedBy)
	default:
		fmt.Fprintf(out, "bundle intact: events %d to %d (%d), signed by audit key %s — NOT PINNED: this shows only that the bundle is unchanged since whoever holds key %s signed it; pass --public-key (from `tollgate audit head --json` where it was exported) to check it is yours\n",
			rep.FromSeq, rep.HeadSeq, rep.Checked, rep.KeyID, rep.KeyID)
	}
	if !rep.OK {
		return errors.New("audit bundle verification failed")
	}
	return nil
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
