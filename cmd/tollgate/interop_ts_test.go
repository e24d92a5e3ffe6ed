//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// interopTSSDKVersion is the TypeScript SDK pinned in the Taskfile's
// setup:npm. It speaks protocol versions up to 2025-11-25; the stateless
// 2026-07-28 protocol is tested with the go-sdk and mcp-go clients.
const interopTSSDKVersion = "1.32.2"

// tsResult is what testdata/interop-ts.cjs saw.
type tsResult struct {
	Negotiated     string   `json:"negotiated"`
	Tools          []string `json:"tools"`
	Progress       []int    `json:"progress"`
	DeployLink     string   `json:"deployLink"`
	Resources      []string `json:"resources"`
	Templates      []string `json:"templates"`
	PoliciesMime   string   `json:"policiesMime"`
	PoliciesHasTLD bool     `json:"policiesHasTLDs"`
	SpendAgent     string   `json:"spendAgent"`
	Updates        int      `json:"updates"`
	Final          string   `json:"final"`
	Events         []string `json:"events"`
}

// TestTypeScriptSDKClient drives `tollgate serve` with the official
// TypeScript SDK client at each protocol version it shares with tollgate,
// over streamable HTTP and stdio: tools, logging/setLevel and
// notifications/message, ordered progress, resources and templates, and a
// subscription told of an approval made with the CLI in another process.
func TestTypeScriptSDKClient(t *testing.T) {
	t.Parallel()
	for _, version := range []string{"2025-11-25", "2025-06-18"} {
		for _, transport := range []string{"http", "stdio"} {
			t.Run(transport+"/"+version, func(t *testing.T) {
				t.Parallel()
				e := newInteropEnv(t)
				pkg := e.npmPackage("@modelcontextprotocol/sdk", interopTSSDKVersion)
				script, err := filepath.Abs(filepath.Join("testdata", "interop-ts.cjs"))
				if err != nil {
					t.Fatal(err)
				}
				args := []string{script, filepath.Dir(filepath.Dir(pkg)), version, transport}
				if transport == "http" {
					args = append(args, e.serveHTTP()+"/mcp")
				} else {
					args = append(args, e.bin, "serve", "--transport", "stdio", "--sandbox")
				}
				res := e.runTS(args)
				if res.Negotiated != version {
					t.Errorf("negotiated %q, want %s", res.Negotiated, version)
				}
				if !slices.Equal(res.Tools, interopWantTools) {
					t.Errorf("tools %v", res.Tools)
				}
				if len(res.Progress) < 2 || !strings.HasPrefix(res.DeployLink, "tollgate://operations/op_") {
					t.Errorf("progress %v, link %q", res.Progress, res.DeployLink)
				}
				if !slices.Equal(res.Resources, []string{"tollgate://operations", "tollgate://policies", "tollgate://spend"}) ||
					!slices.Equal(res.Templates, []string{"tollgate://operations/{operation_id}"}) ||
					res.PoliciesMime != "text/markdown" || !res.PoliciesHasTLD || res.SpendAgent != "web-bot" {
					t.Errorf("resources %+v", res)
				}
				if res.Updates < 1 || res.Final != "succeeded" {
					t.Errorf("subscription: %d updates, final state %q", res.Updates, res.Final)
				}
				for _, ev := range []string{"policy_denied", "approval_requested", "approval_approved"} {
					if !slices.Contains(res.Events, ev) {
						t.Errorf("no %s message among %v", ev, res.Events)
					}
				}
			})
		}
	}
}

// runTS runs the TypeScript client script, approving from the CLI when it
// asks, and returns its result.
func (e *interopEnv) runTS(args []string) tsResult {
	t := e.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", args...)
	cmd.Dir = e.dir
	cmd.Env = append(e.env(), "NO_COLOR=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var res tsResult
	got := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "APPROVE "):
			approve := e.command("approvals", "approve", strings.TrimPrefix(line, "APPROVE "))
			if out, err := approve.CombinedOutput(); err != nil {
				t.Errorf("tollgate approvals approve: %v\n%s", err, out)
			}
		case strings.HasPrefix(line, "RESULT "):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "RESULT ")), &res); err != nil {
				t.Fatalf("result %q: %v", line, err)
			}
			got = true
		}
	}
	if err := cmd.Wait(); err != nil || !got {
		t.Fatalf("TypeScript client: %v (result %v)\nstderr:\n%s", err, got, stderr.String())
	}
	return res
}
