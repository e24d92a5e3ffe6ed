package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tollgatehq/tollgate/cloudflare"
	"github.com/tollgatehq/tollgate/cloudflare/sandbox"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/ledger/store"
	"github.com/tollgatehq/tollgate/server"
)

// parentSource is where the Cloudflare parent token comes from:
// CLOUDFLARE_API_TOKEN_FILE (a file tollgate can rewrite when it rotates the
// token) or CLOUDFLARE_API_TOKEN (which it cannot); nil when neither is set.
func parentSource(log *slog.Logger) (cloudflare.ParentSource, error) {
	token, file := os.Getenv("CLOUDFLARE_API_TOKEN"), os.Getenv("CLOUDFLARE_API_TOKEN_FILE")
	switch {
	case token != "" && file != "":
		return nil, errors.New("both CLOUDFLARE_API_TOKEN and CLOUDFLARE_API_TOKEN_FILE are set: keep the file (tollgate can rotate it) and unset CLOUDFLARE_API_TOKEN")
	case file != "":
		fi, err := os.Stat(file)
		if err != nil {
			return nil, fmt.Errorf("CLOUDFLARE_API_TOKEN_FILE: %w", err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			log.Warn("the Cloudflare parent token file is readable by other users; chmod 600 it", "file", file, "mode", fi.Mode().Perm().String())
		}
		return cloudflare.TokenFile(file), nil
	case token != "":
		return cloudflare.StaticParent(token, "the environment variable CLOUDFLARE_API_TOKEN"), nil
	}
	return nil, nil
}

// sandboxStatePath is the sandbox state of the database at db: beside it,
// named after it, so every tollgate process on one database shares one
// sandbox account and two databases never do. The state file that every
// database in a directory used to share (sandbox.json) is adopted by the
// default database, tollgate.db.
func sandboxStatePath(db string, log *slog.Logger) (string, error) {
	if store.IsPostgresDSN(db) {
		// Replicas on one host share the state through a file named after
		// the database (never its password).
		sum := sha256.Sum256([]byte(store.RedactDSN(db)))
		return filepath.Join(filepath.Dir(store.DefaultPath), "sandbox-"+hex.EncodeToString(sum[:6])+".json"), nil
	}
	state := db + ".sandbox.json"
	legacy := filepath.Join(filepath.Dir(db), "sandbox.json")
	if filepath.Base(db) != "tollgate.db" {
		return state, nil
	}
	if _, err := os.Stat(state); !errors.Is(err, fs.ErrNotExist) {
		return state, nil
	}
	if _, err := os.Stat(legacy); err != nil {
		return state, nil
	}
	if err := os.Rename(legacy, state); err != nil {
		return "", fmt.Errorf("adopt the sandbox state %s as %s: %w", legacy, state, err)
	}
	log.Info("the sandbox state now lives beside its database", "from", legacy, "to", state)
	return state, nil
}

// sandboxParent is the sandbox's parent token as a ParentSource: rolling it
// at the sandbox records the new value in the sandbox's state, which every
// tollgate on the database reads.
type sandboxParent struct {
	sb    *sandbox.Sandbox
	state string
}

func (p sandboxParent) Read() (string, error) { return p.sb.ParentToken(), nil }
func (p sandboxParent) Writable() error       { return nil }
func (p sandboxParent) String() string        { return "the sandbox state " + p.state }

// Write checks the sandbox already holds the value: it recorded it when
// the value was rolled.
func (p sandboxParent) Write(token string) error {
	if p.sb.ParentToken() != token {
		return fmt.Errorf("the sandbox state %s does not hold the rolled parent token", p.state)
	}
	return nil
}

var rotateEverySetting = durationSetting("cloudflare-rotate-every", "TOLLGATE_CLOUDFLARE_ROTATE_EVERY", "roll the Cloudflare parent token this often while serving (0 never)", func(c *server.Config) *time.Duration { return &c.Cloudflare.RotateEvery })

func runCredentials(ctx context.Context, args []string, out io.Writer) error {
	settings := []setting{dbSetting, auditKeySetting,
		boolSetting("sandbox", "TOLLGATE_SANDBOX", "use the built-in Cloudflare sandbox even when credentials are set", func(c *server.Config) *bool { return &c.Cloudflare.Sandbox }),
		stringSetting("cloudflare-api-base", "TOLLGATE_CLOUDFLARE_API_BASE", "Cloudflare API base URL", func(c *server.Config) *string { return &c.Cloudflare.APIBase }),
		rotateEverySetting,
	}
	return subcommand("credentials", args, map[string]func([]string) error{
		"rotate": func(args []string) error {
			fs := newFlagSet("credentials rotate", "roll the Cloudflare parent token's value and store the new one where it came from")
			cf := addConfigFlags(fs, settings...)
			if err := fs.Parse(args); err != nil {
				return err
			}
			return withBroker(ctx, cf, func(b *cloudflare.Broker, _ server.Config) error {
				rec, err := b.Rotate(ctx)
				if errors.Is(err, cloudflare.ErrParentReadOnly) && rec.Source == envTokenSource {
					return fmt.Errorf("%w\nPut the token in a file only tollgate can read (chmod 600), set CLOUDFLARE_API_TOKEN_FILE to its path and unset CLOUDFLARE_API_TOKEN; then tollgate can rotate it", err)
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "rotated Cloudflare parent token %s: the new value is verified and stored in %s\n", rec.TokenID, rec.Source)
				fmt.Fprintln(out, "tollgate processes using the old value re-read it on their next request")
				return nil
			})
		},
		"status": func(args []string) error {
			fs := newFlagSet("credentials status", "show the Cloudflare parent token's age, expiry and permissions (never its value)")
			cf := addConfigFlags(fs, settings...)
			asJSON := fs.Bool("json", false, "print as JSON")
			if err := fs.Parse(args); err != nil {
				return err
			}
			return withBroker(ctx, cf, func(b *cloudflare.Broker, cfg server.Config) error {
				st, err := b.ParentStatus(ctx)
				if err != nil {
					return err
				}
				return printParentStatus(out, st, cfg.Cloudflare.RotateEvery, time.Now(), *asJSON)
			})
		},
	}, []string{"rotate", "status"})
}

const envTokenSource = "the environment variable CLOUDFLARE_API_TOKEN"

// withBroker builds the broker tollgate serve would use (the real account,
// or the sandbox on the database's state), with rotations audited in the
// database as the CLI user.
func withBroker(ctx context.Context, cf *configFlags, fn func(*cloudflare.Broker, server.Config) error) error {
	return onLedger(ctx, cf, creates, func(cfg server.Config, db *ledger.DB) error {
		if err := cfg.Validate(); err != nil {
			return fmt.Errorf("invalid configuration:\n%w", err)
		}
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		rt := &runtime{}
		defer rt.close()
		cfCfg, err := cloudflareConfig(ctx, cfg, log, rt)
		if err != nil {
			return err
		}
		cfCfg.Logger = log
		cfCfg.OnRotation = server.AuditRotation(db, cliActor())
		b, err := cloudflare.NewBroker(cfCfg)
		if err != nil {
			return err
		}
		return fn(b, cfg)
	})
}

// parentStatusJSON is `credentials status --json`.
type parentStatusJSON struct {
	Source       string                    `json:"source"`
	Rotatable    bool                      `json:"rotatable"`
	NotRotatable string                    `json:"not_rotatable,omitempty"`
	TokenID      string                    `json:"token_id"`
	Name         string                    `json:"name"`
	Status       string                    `json:"status"`
	IssuedOn     time.Time                 `json:"issued_on"`
	LastRolled   time.Time                 `json:"last_rolled"`
	AgeSeconds   int64                     `json:"age_seconds"`
	ExpiresOn    *time.Time                `json:"expires_on"`
	RotateEvery  string                    `json:"rotate_every"`
	NextRotation *time.Time                `json:"next_rotation"`
	Policies     []cloudflare.PolicyStatus `json:"permissions"`
}

func printParentStatus(out io.Writer, st cloudflare.ParentStatus, every time.Duration, now time.Time, asJSON bool) error {
	age := now.Sub(st.LastRolled).Truncate(time.Second)
	var next *time.Time
	if every > 0 && st.NotWritable == "" {
		n := st.LastRolled.Add(every).UTC()
		next = &n
	}
	var expires *time.Time
	if !st.ExpiresOn.IsZero() {
		e := st.ExpiresOn.UTC()
		expires = &e
	}
	if asJSON {
		every := every.String()
		if every == "0s" {
			every = "never"
		}
		return printJSON(out, parentStatusJSON{
			Source: st.Source, Rotatable: st.NotWritable == "", NotRotatable: st.NotWritable,
			TokenID: st.TokenID, Name: st.Name, Status: st.Status, IssuedOn: st.IssuedOn.UTC(), LastRolled: st.LastRolled.UTC(),
			AgeSeconds: int64(age / time.Second), ExpiresOn: expires, RotateEvery: every, NextRotation: next, Policies: st.Policies,
		})
	}
	rotation := "never (cloudflare.rotate_every is 0)"
	switch {
	case st.NotWritable != "":
		rotation = "not possible: " + st.NotWritable
	case next != nil && !next.After(now):
		rotation = "due now (tollgate serve rolls it within the hour)"
	case next != nil:
		rotation = next.Format(time.RFC3339) + " (every " + every.String() + ")"
	}
	expiry := "never"
	if expires != nil {
		expiry = expires.Format(time.RFC3339)
	}
	rows := [][]string{
		{"source", st.Source},
		{"token", st.TokenID + " (" + st.Name + ")"},
		{"status", st.Status},
		{"issued", st.IssuedOn.UTC().Format(time.RFC3339)},
		{"value age", age.String() + " (last rolled " + st.LastRolled.UTC().Format(time.RFC3339) + ")"},
		{"expires", expiry},
		{"next rotation", rotation},
	}
	for _, p := range st.Policies {
		rows = append(rows, []string{p.Effect, strings.Join(p.Groups, ", ") + " on " + strings.Join(p.Resources, ", ")})
	}
	return table(out, []string{"PARENT TOKEN", ""}, rows)
}
