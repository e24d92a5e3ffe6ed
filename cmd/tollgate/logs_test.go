//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestServeLogsOneLinePerToolCall runs the binary with --log-format json and
// reads its stderr as a person's log tool would: one INFO line per tool
// call with agent, tool, outcome, operation and ms; token mint and revoke
// only at DEBUG.
func TestServeLogsOneLinePerToolCall(t *testing.T) {
	t.Parallel()
	for _, level := range []string{"info", "debug"} {
		t.Run(level, func(t *testing.T) {
			t.Parallel()
			e := newInteropEnv(t)
			cmd := e.command("serve", "--transport", "stdio", "--sandbox", "--log-format", "json", "--log-level", level)
			var errb bytes.Buffer
			cmd.Stderr = &errb
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			c := sdk.NewClient(&sdk.Implementation{Name: "logs-test", Version: "1"}, nil)
			s, err := c.Connect(ctx, &sdk.CommandTransport{Command: cmd}, nil)
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			for _, call := range []struct {
				name string
				args map[string]any
			}{
				{"check_domain", map[string]any{"domain": "logs.dev"}},
				{"deploy_worker", map[string]any{"script_name": "web-logs", "module": interopModule, "compatibility_date": "2025-01-01", "environment": "preview", "reason": "a preview for the logging test"}},
				{"register_domain", map[string]any{"domain": "logs.xyz", "reason": "refused by policy for the logging test"}},
			} {
				if _, err := s.CallTool(ctx, &sdk.CallToolParams{Name: call.name, Arguments: call.args}); err != nil {
					t.Fatalf("%s: %v", call.name, err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			type line struct {
				Level     string  `json:"level"`
				Msg       string  `json:"msg"`
				Agent     string  `json:"agent"`
				Tool      string  `json:"tool"`
				Outcome   string  `json:"outcome"`
				Operation string  `json:"operation"`
				Status    any     `json:"status"` // a string here, a number on cloudflare request lines
				MS        *int64  `json:"ms"`
				Error     *string `json:"error"`
			}
			calls := map[string]line{}
			mints := map[string]int{}
			sc := bufio.NewScanner(&errb)
			for sc.Scan() {
				var l line
				if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
					t.Fatalf("--log-format json wrote a line that is not JSON: %q", sc.Text())
				}
				switch l.Msg {
				case "tool call":
					calls[l.Tool] = l
				case "minted cloudflare token", "revoked cloudflare token":
					mints[l.Level]++
				}
			}
			for _, tool := range []string{"check_domain", "deploy_worker", "register_domain"} {
				l, ok := calls[tool]
				if !ok || l.Level != "INFO" || l.Agent != "web-bot" || l.MS == nil {
					t.Errorf("no INFO line with agent and ms for %s: %+v", tool, l)
				}
			}
			if l := calls["deploy_worker"]; l.Outcome != "ok" || !strings.HasPrefix(l.Operation, "op_") || l.Status != "succeeded" {
				t.Errorf("deploy_worker line %+v", l)
			}
			if l := calls["register_domain"]; l.Outcome != "refused" || l.Status != "denied" || l.Error == nil || !strings.Contains(*l.Error, "xyz") {
				t.Errorf("register_domain line %+v", l)
			}
			if mints["INFO"] > 0 {
				t.Errorf("token mint/revoke logged at INFO %d times", mints["INFO"])
			}
			if level == "debug" && mints["DEBUG"] == 0 {
				t.Error("no token mint/revoke line at --log-level debug")
			}
		})
	}
}

// TestServeRefusesBadLogFlags: a wrong level or format is a usage error that
// says what is accepted, not a silent default.
func TestServeRefusesBadLogFlags(t *testing.T) {
	t.Parallel()
	e := newInteropEnv(t)
	for _, tc := range []struct{ flag, value, want string }{
		{"--log-level", "loud", "debug, info, warn or error"},
		{"--log-format", "xml", "text or json"},
	} {
		cmd := e.command("serve", "--transport", "stdio", "--sandbox", tc.flag, tc.value)
		var errb bytes.Buffer
		cmd.Stderr = &errb
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%s %s: %v (want exit status 2 naming %q)\n%s", tc.flag, tc.value, err, tc.want, errb.String())
		}
	}
}
