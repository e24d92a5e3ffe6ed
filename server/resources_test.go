package server

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/tools"
)

// readJSON reads a resource and decodes its one JSON content.
func readJSON[T any](t *testing.T, ctx context.Context, s *sdk.ClientSession, uri string) T {
	t.Helper()
	res, err := s.ReadResource(ctx, &sdk.ReadResourceParams{URI: uri})
	if err != nil {
		t.Fatalf("read %s: %v", uri, err)
	}
	if len(res.Contents) != 1 || res.Contents[0].URI != uri || res.Contents[0].MIMEType != "application/json" {
		t.Fatalf("read %s: contents %+v", uri, res.Contents)
	}
	var v T
	dec := json.NewDecoder(strings.NewReader(res.Contents[0].Text))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("read %s: %v\n%s", uri, err, res.Contents[0].Text)
	}
	return v
}

// linkOf is the resource_link a mutating call's result carries.
func linkOf(t *testing.T, res *sdk.CallToolResult) string {
	t.Helper()
	for _, c := range res.Content {
		if l, ok := c.(*sdk.ResourceLink); ok {
			if l.MIMEType != "application/json" || l.Name == "" {
				t.Errorf("resource_link %+v", l)
			}
			return l.URI
		}
	}
	t.Fatalf("no resource_link in the result: %+v", res.Content)
	return ""
}

// TestResources lists and reads every resource as the calling agent, with
// the same answers and refusals as the tools, over each protocol version.
func TestResources(t *testing.T) {
	t.Parallel()
	for _, version := range []string{"", "2025-11-25", "2025-06-18"} {
		t.Run(orNewest(version), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s, _ := goSDKSession(t, e, "streamable", version, nil, nil)

			var uris []string
			for r, err := range s.Resources(ctx, nil) {
				if err != nil {
					t.Fatal(err)
				}
				if r.Name == "" || r.Title == "" || r.Description == "" || r.MIMEType == "" {
					t.Errorf("resource %+v lacks a name, title, description or MIME type", r)
				}
				uris = append(uris, r.URI)
			}
			slices.Sort(uris)
			if want := []string{"tollgate://operations", "tollgate://policies", "tollgate://spend"}; !slices.Equal(uris, want) {
				t.Errorf("resources %v, want %v", uris, want)
			}
			var templates []string
			for rt, err := range s.ResourceTemplates(ctx, nil) {
				if err != nil {
					t.Fatal(err)
				}
				templates = append(templates, rt.URITemplate)
			}
			if !slices.Equal(templates, []string{"tollgate://operations/{operation_id}"}) {
				t.Errorf("templates %v", templates)
			}

			res, err := s.CallTool(ctx, &sdk.CallToolParams{Name: "register_domain", Arguments: map[string]any{"domain": "resources.dev", "reason": reason}})
			if err != nil || res.IsError {
				t.Fatalf("register_domain: %v %+v", err, res)
			}
			uri := linkOf(t, res)
			op := readJSON[tools.OperationView](t, ctx, s, uri)
			if uri != tools.OperationURI(op.OperationID) || op.Status != "awaiting_approval" || len(op.History) != 0 {
				t.Errorf("%s: %+v", uri, op)
			}

			list := readJSON[tools.OperationList](t, ctx, s, "tollgate://operations")
			if len(list.Operations) != 1 || list.Operations[0].OperationID != op.OperationID {
				t.Errorf("tollgate://operations: %+v", list)
			}
			spend := readJSON[tools.SpendStatusResult](t, ctx, s, "tollgate://spend")
			if spend.Agent != webBot || spend.Team != "web" {
				t.Errorf("tollgate://spend: %+v", spend)
			}

			pol, err := s.ReadResource(ctx, &sdk.ReadResourceParams{URI: "tollgate://policies"})
			if err != nil || len(pol.Contents) != 1 || pol.Contents[0].MIMEType != "text/markdown" {
				t.Fatalf("tollgate://policies: %v %+v", err, pol)
			}
			for _, want := range []string{
				"You are agent web-bot of team web (roles: agent, deployer)",
				"waits for a human approver",
				"only under: .dev, .app, .com",
				"at most 50.00 USD",
				"above 30.00 USD needs two distinct approvers",
				"start with your team: web-",
				"You have the deployer role",
				"at most 3145728 bytes",
				"Nothing is frozen for you",
			} {
				if !strings.Contains(pol.Contents[0].Text, want) {
					t.Errorf("tollgate://policies does not say %q:\n%s", want, pol.Contents[0].Text)
				}
			}

			// Another agent's operation reads as not found, as with get_operation.
			other := opView(t, e.call(opsBot, "register_domain", registerArgs("ops-resources.dev")))
			for _, bad := range []string{tools.OperationURI(other.OperationID), tools.OperationURI("op_nope"), "tollgate://operations/../spend", "tollgate://nothing"} {
				if _, err := s.ReadResource(ctx, &sdk.ReadResourceParams{URI: bad}); err == nil {
					t.Errorf("read %s: no error", bad)
				}
			}
			if _, err := s.ReadResource(ctx, &sdk.ReadResourceParams{URI: tools.OperationURI(other.OperationID)}); err == nil || !strings.Contains(err.Error(), "no operation "+other.OperationID+" that you can read") {
				t.Errorf("reading another agent's operation: %v", err)
			}
		})
	}
}

// updates collects notifications/resources/updated by URI.
type updates struct {
	mu      sync.Mutex
	n       map[string]int
	changed chan struct{}
}

func newUpdates() *updates { return &updates{n: map[string]int{}, changed: make(chan struct{}, 1)} }

func (u *updates) handler(_ context.Context, r *sdk.ResourceUpdatedNotificationRequest) {
	u.mu.Lock()
	u.n[r.Params.URI]++
	u.mu.Unlock()
	select {
	case u.changed <- struct{}{}:
	default:
	}
}

func (u *updates) count(uri string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.n[uri]
}

// waitState waits for updates of uri until reading it shows state.
func (u *updates) waitState(t *testing.T, ctx context.Context, s *sdk.ClientSession, uri, state string) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		if u.count(uri) > 0 && readJSON[tools.OperationView](t, ctx, s, uri).Status == state {
			return
		}
		select {
		case <-u.changed:
		case <-deadline:
			t.Fatalf("%s: %d updates, never %s (now %s)", uri, u.count(uri), state, readJSON[tools.OperationView](t, ctx, s, uri).Status)
		}
	}
}

// TestResourceSubscriptions: a client subscribed to its operation hears of
// every change without polling — one made by this process (an approval,
// then the execution) and one made by another process on the shared ledger
// — over every transport and protocol version. Subscriptions are authorized
// like reads.
func TestResourceSubscriptions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ transport, version string }{
		{"streamable", ""}, // 2026-07-28: subscriptions/listen
		{"streamable", "2025-11-25"},
		{"streamable", "2025-06-18"},
		{"sse", "2025-11-25"},
		{"stdio", "2025-11-25"},
	} {
		t.Run(tc.transport+"/"+orNewest(tc.version), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			u := newUpdates()
			s, _ := goSDKSession(t, e, tc.transport, tc.version, &sdk.ClientOptions{ResourceUpdatedHandler: u.handler}, nil)
			register := func(domain string) string {
				t.Helper()
				res, err := s.CallTool(ctx, &sdk.CallToolParams{Name: "register_domain", Arguments: map[string]any{"domain": domain, "reason": reason}})
				if err != nil || res.IsError {
					t.Fatalf("register %s: %v %+v", domain, err, res)
				}
				uri := linkOf(t, res)
				if err := s.Subscribe(ctx, &sdk.SubscribeParams{URI: uri}); err != nil {
					t.Fatalf("subscribe %s: %v", uri, err)
				}
				return uri
			}

			// A change in this process: approved, executing, succeeded.
			approved := register("subscribed.dev")
			e.approve(strings.TrimPrefix(approved, tools.OperationURI("")), "bob")
			u.waitState(t, ctx, s, approved, "succeeded")

			// A change another process makes on the shared ledger: this
			// server's watcher is never told, its followers must notice.
			elsewhere := register("subscribed-elsewhere.dev")
			id := strings.TrimPrefix(elsewhere, tools.OperationURI(""))
			other, err := ledger.Open(ctx, e.cfg.DB, ledger.WithMigrations(approvals.Migrations), ledger.WithAuditKey(testAuditKey))
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close()
			if _, err := other.ReleaseFrom(ctx, id, []ledger.State{ledger.StateAwaitingApproval}, ledger.StateCancelled, "cancelled", "cancelled by another process"); err != nil {
				t.Fatal(err)
			}
			u.waitState(t, ctx, s, elsewhere, "cancelled")

			if err := s.Unsubscribe(ctx, &sdk.UnsubscribeParams{URI: approved}); err != nil {
				t.Errorf("unsubscribe: %v", err)
			}

			// Only the caller's own operations can be subscribed to.
			theirs := opView(t, e.call(opsBot, "register_domain", registerArgs("not-yours.dev")))
			for _, bad := range []string{tools.OperationURI(theirs.OperationID), "tollgate://spend", "test://watched-resource"} {
				if tc.version == "" {
					// The stateless protocol subscribes on a stream of its own:
					// the refusal ends it, which the go-sdk client reports
					// asynchronously; covered by the legacy cases.
					continue
				}
				if err := s.Subscribe(ctx, &sdk.SubscribeParams{URI: bad}); err == nil || !strings.Contains(err.Error(), "resource not found") {
					t.Errorf("subscribe %s: %v", bad, err)
				}
			}
		})
	}
}
