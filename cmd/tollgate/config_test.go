package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestConfigPrecedence: flags beat TOLLGATE_* variables, which beat
// tollgate.yaml, which beats the embedded defaults.
func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "tollgate.yaml")
	if err := os.WriteFile(cfgFile, []byte(`
listen: 127.0.0.1:9000
db: /from/yaml.db
agent: yaml-agent
agents:
  - {name: yaml-agent, team: yaml, roles: [agent]}
  - {name: flag-agent, team: flag, roles: [agent]}
approvals:
  wait: 10s
  expiry: 20m
http:
  max_body_bytes: 1048576
  max_in_flight_per_agent: 4
  max_sessions_per_agent: 12
  session_idle_timeout: 45m
  idle_timeout: 1m
`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TOLLGATE_CONFIG", cfgFile)
	t.Setenv("TOLLGATE_DB", "/from/env.db")
	t.Setenv("TOLLGATE_APPROVAL_WAIT", "20s")
	t.Setenv("TOLLGATE_MAX_IN_FLIGHT", "8")
	t.Setenv("TOLLGATE_SESSION_IDLE_TIMEOUT", "20m")

	fs := newFlagSet("serve", "test")
	cf := addConfigFlags(fs, serveSettings...)
	if err := fs.Parse([]string{"--approval-wait", "30s", "--agent", "flag-agent", "--sandbox", "--body-read-timeout", "5s"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := cf.load()
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct{ name, got, want string }{
		{"listen from yaml", cfg.Listen, "127.0.0.1:9000"},
		{"db from env over yaml", cfg.DB, "/from/env.db"},
		{"agent from flag over yaml", cfg.Agent, "flag-agent"},
		{"wait from flag over env over yaml", cfg.Approvals.Wait.String(), (30 * time.Second).String()},
		{"expiry from yaml", cfg.Approvals.Expiry.String(), (20 * time.Minute).String()},
		{"transport from defaults", cfg.Transport, "http"},
		{"body cap from yaml", fmt.Sprint(cfg.HTTP.MaxBodyBytes), "1048576"},
		{"in-flight cap from env over yaml", fmt.Sprint(cfg.HTTP.MaxInFlightPerAgent), "8"},
		{"idle timeout from yaml", cfg.HTTP.IdleTimeout.String(), time.Minute.String()},
		{"session cap from yaml", fmt.Sprint(cfg.HTTP.MaxSessionsPerAgent), "12"},
		{"session idle timeout from env over yaml", cfg.HTTP.SessionIdleTimeout.String(), (20 * time.Minute).String()},
		{"body read timeout from flag", cfg.HTTP.BodyReadTimeout.String(), (5 * time.Second).String()},
		{"header timeout from defaults", cfg.HTTP.ReadHeaderTimeout.String(), (10 * time.Second).String()},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, c.got, c.want)
		}
	}
	if !cfg.Cloudflare.Sandbox {
		t.Error("--sandbox given without a value must turn the sandbox on")
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("valid config refused: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("listen: x\nunknown_key: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := newFlagSet("serve", "test")
	cf := addConfigFlags(fs, serveSettings...)
	if err := fs.Parse([]string{"--config", bad}); err != nil {
		t.Fatal(err)
	}
	if _, err := cf.load(); err == nil || !strings.Contains(err.Error(), "unknown_key") {
		t.Fatalf("unknown yaml key must be an error naming it, got %v", err)
	}

	fs = newFlagSet("serve", "test")
	cf = addConfigFlags(fs, serveSettings...)
	if err := fs.Parse([]string{"--config", filepath.Join(dir, "missing.yaml")}); err != nil {
		t.Fatal(err)
	}
	if _, err := cf.load(); err == nil {
		t.Fatal("an explicitly named config file that is missing must be an error")
	}

	fs = newFlagSet("serve", "test")
	cf = addConfigFlags(fs, serveSettings...)
	t.Setenv("TOLLGATE_CONFIG", "")
	if err := fs.Parse([]string{"--approval-wait", "soon"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cf.load(); err == nil || !strings.Contains(err.Error(), "approval-wait") {
		t.Fatalf("a bad duration must name the flag, got %v", err)
	}

	fs = newFlagSet("serve", "test")
	cf = addConfigFlags(fs, serveSettings...)
	if err := fs.Parse([]string{"--listen", "0.0.0.0:8787", "--auth", "none"}); err != nil {
		t.Fatal(err)
	}
	cfg, _ := cf.load()
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "not loopback") {
		t.Fatalf("non-loopback without tokens or TLS must be refused, got %v", err)
	}

	fs = newFlagSet("serve", "test")
	cf = addConfigFlags(fs, serveSettings...)
	if err := fs.Parse([]string{"--max-body-bytes", "lots"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cf.load(); err == nil || !strings.Contains(err.Error(), "max-body-bytes") {
		t.Fatalf("a bad size must name the flag, got %v", err)
	}
	fs = newFlagSet("serve", "test")
	cf = addConfigFlags(fs, serveSettings...)
	if err := fs.Parse([]string{"--max-body-bytes", "100", "--max-in-flight", "-1", "--max-sessions", "-2"}); err != nil {
		t.Fatal(err)
	}
	cfg, _ = cf.load()
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "http.max_body_bytes 100") || !strings.Contains(err.Error(), "http.max_in_flight_per_agent -1") || !strings.Contains(err.Error(), "http.max_sessions_per_agent -2") {
		t.Fatalf("a body cap under 64 KiB and a negative in-flight cap must both be refused, got %v", err)
	}
}

// TestEveryCommandHasHelp: each subcommand answers --help with its flags.
func TestEveryCommandHasHelp(t *testing.T) {
	for _, c := range commands() {
		var out bytes.Buffer
		err := dispatch(context.Background(), []string{c.name, "--help"}, &out)
		if err != nil && !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%s --help: %v", c.name, err)
		}
	}
	var out bytes.Buffer
	if err := dispatch(context.Background(), []string{"version", "--json"}, &out); err != nil || !strings.Contains(out.String(), `"version"`) {
		t.Errorf("version --json: %v %q", err, out.String())
	}
	if err := dispatch(context.Background(), []string{"nope"}, &out); err == nil {
		t.Error("an unknown command must be an error")
	}
}
