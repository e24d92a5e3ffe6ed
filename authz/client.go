package authz

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	effectv1 "github.com/cerbos/cerbos/api/genpb/cerbos/effect/v1"
	enginev1 "github.com/cerbos/cerbos/api/genpb/cerbos/engine/v1"
	requestv1 "github.com/cerbos/cerbos/api/genpb/cerbos/request/v1"
	responsev1 "github.com/cerbos/cerbos/api/genpb/cerbos/response/v1"
	schemav1 "github.com/cerbos/cerbos/api/genpb/cerbos/schema/v1"
	svcv1 "github.com/cerbos/cerbos/api/genpb/cerbos/svc/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// DefaultTimeout bounds one check, connection wait included.
const DefaultTimeout = 2 * time.Second

// noPolicyMatch is what Cerbos reports as the matched policy when no policy
// exists for the resource kind (or none of its rules applied).
const noPolicyMatch = "NO_MATCH"

// maxAttrDepth bounds nesting in attribute values; it also stops a map that
// contains itself from recursing forever.
const maxAttrDepth = 16

// maxExactInt is the largest integer a JSON/protobuf number (float64)
// carries exactly. Money in micros stays far below it (9e9 USD).
const maxExactInt = 1 << 53

// Option configures a [Client].
type Option func(*clientConfig)

type clientConfig struct {
	tls       bool
	caFile    string
	plaintext bool
	timeout   time.Duration
	logger    *slog.Logger
	cache     *DecisionCacheConfig
}

// WithTLS connects over TLS, verifying the PDP's certificate against the PEM
// CA bundle in caFile, or against the system roots when caFile is "".
// TCP addresses use TLS with system roots unless [WithPlaintext] is given.
func WithTLS(caFile string) Option {
	return func(c *clientConfig) { c.tls, c.caFile = true, caFile }
}

// WithPlaintext connects without TLS (h2c). Unix sockets are plaintext by
// default; for a TCP address this is only sensible on a trusted network.
func WithPlaintext() Option {
	return func(c *clientConfig) { c.plaintext = true }
}

// WithTimeout bounds each check, including waiting for the connection to
// become ready; a check that runs out of time is denied as unavailable.
// Default [DefaultTimeout].
func WithTimeout(d time.Duration) Option {
	return func(c *clientConfig) { c.timeout = d }
}

// WithLogger sets the logger for PDP failures (default slog.Default()).
// Principals and attributes are never logged.
func WithLogger(l *slog.Logger) Option {
	return func(c *clientConfig) { c.logger = l }
}

// Client checks permissions against a Cerbos PDP over gRPC. It is safe for
// concurrent use and reconnects on its own when the PDP restarts.
type Client struct {
	addr    pdpAddr
	conn    *grpc.ClientConn
	stub    svcv1.CerbosServiceClient
	timeout time.Duration
	log     *slog.Logger
	cache   *decisionCache // nil: every check asks the PDP

	subjMu   sync.Mutex
	subjects map[string]*subject

	requests, hits, misses atomic.Uint64

	closeOnce sync.Once
	closeErr  error
}

// NewClient prepares a client for the PDP at addr ("host:port" or
// "unix:/absolute/path"). It does not wait for the PDP: checks made while it
// is unreachable are denied as unavailable, and [Client.Ready] waits for it.
// ctx is not retained.
//
// The client owns its gRPC connection (rather than using cerbos.New) because
// the SDK client can neither be closed nor given a reconnect backoff; ours
// retries within a second so a restarted managed PDP is picked up quickly.
// Requests are built from the generated protobuf types (buildPrincipal,
// buildResource), which keeps the SDK — with its Cerbos Hub client and its
// CEL-based validator — out of the binary.
func NewClient(ctx context.Context, addr string, opts ...Option) (*Client, error) {
	_ = ctx // reserved: dialing is lazy, nothing here blocks
	a, err := parseAddr(addr)
	if err != nil {
		return nil, err
	}
	cfg := clientConfig{timeout: DefaultTimeout}
	for _, o := range opts {
		o(&cfg)
	}
	var problems []error
	if cfg.timeout <= 0 {
		problems = append(problems, fmt.Errorf("timeout %s must be positive", cfg.timeout))
	}
	if cfg.tls && cfg.plaintext {
		problems = append(problems, errors.New("WithTLS and WithPlaintext are mutually exclusive"))
	}
	if cfg.cache != nil && cfg.cache.Policies == nil {
		problems = append(problems, errors.New("WithDecisionCache needs a PolicySource (the managed PDP, or WatchPolicies for an external one)"))
	}
	var creds credentials.TransportCredentials
	switch {
	case cfg.plaintext, a.unix && !cfg.tls:
		creds = insecure.NewCredentials()
	default:
		tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.caFile != "" {
			pool, err := loadCAs(cfg.caFile)
			if err != nil {
				problems = append(problems, err)
			}
			tlsConf.RootCAs = pool
		}
		creds = credentials.NewTLS(tlsConf)
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("cerbos client for %s: %w", a, errors.Join(problems...))
	}
	logger := cfg.logger
	if logger == nil {
		logger = slog.Default()
	}
	conn, err := grpc.NewClient(a.target,
		grpc.WithTransportCredentials(creds),
		grpc.WithUserAgent("tollgate-authz"),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  50 * time.Millisecond,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   time.Second,
			},
			MinConnectTimeout: 5 * time.Second,
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("cerbos client for %s: %w", a, err)
	}
	c := &Client{
		addr:     a,
		conn:     conn,
		stub:     svcv1.NewCerbosServiceClient(conn),
		timeout:  cfg.timeout,
		log:      logger.With("subsystem", "authz", "pdp", a.String()),
		subjects: map[string]*subject{},
	}
	if cfg.cache != nil {
		c.cache = newDecisionCache(*cfg.cache)
	}
	return c, nil
}

// Stats returns what the client has done so far.
func (c *Client) Stats() Stats {
	return Stats{Requests: c.requests.Load(), CacheHits: c.hits.Load(), CacheMisses: c.misses.Load()}
}

func loadCAs(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA bundle %s holds no PEM certificates", file)
	}
	return pool, nil
}

// Addr returns the PDP address in the form NewClient accepts.
func (c *Client) Addr() string { return c.addr.String() }

// Ready waits until the PDP answers, bounded by ctx or, when ctx has no
// deadline, by the client timeout.
func (c *Client) Ready(ctx context.Context) error {
	cancel := context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok {
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
	}
	defer cancel()
	if _, err := c.stub.ServerInfo(ctx, &requestv1.ServerInfoRequest{}, grpc.WaitForReady(true)); err != nil {
		return fmt.Errorf("cerbos at %s not ready: %w", c.addr, err)
	}
	return nil
}

// Close releases the connection. Checks after Close are denied as unavailable.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		if err := c.conn.Close(); err != nil {
			c.closeErr = fmt.Errorf("close cerbos client: %w", err)
		}
	})
	return c.closeErr
}

// bound applies the client timeout unless ctx already ends sooner.
func (c *Client) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= c.timeout {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.timeout)
}

// Check asks whether p may perform each action on r, in one CheckResources
// call. The map has one entry per distinct requested action. It never fails:
// every problem is a deny with a reason (see [Decision]).
func (c *Client) Check(ctx context.Context, p Principal, r Resource, actions ...string) map[string]Decision {
	res := c.CheckBatch(ctx, p, []Check{{Resource: r, Actions: actions}})
	out := make(map[string]Decision, len(actions))
	for i, a := range actions {
		out[a] = res[0][i]
	}
	return out
}

// CheckBatch checks several resources for one principal in a single
// CheckResources call. result[i][j] is the decision for checks[i].Actions[j].
// Like Check, it never fails: a check that cannot be sent (invalid resource
// or attributes) is denied on its own, and a failed call denies every
// action as unavailable. With a decision cache, what it can answer is
// answered from memory and only the rest is sent; when nothing is left, no
// call is made.
func (c *Client) CheckBatch(ctx context.Context, p Principal, checks []Check) [][]Decision {
	out := make([][]Decision, len(checks))
	for i, ch := range checks {
		out[i] = make([]Decision, len(ch.Actions))
	}
	subj := c.subject(p)
	var st PolicyState
	if c.cache != nil {
		st = c.cache.src.PolicyState()
	}

	type sentCheck struct {
		idx     int
		actions []string            // sent to the PDP
		known   map[string]Decision // answered from the cache
		key     string              // decision-key prefix; "" = not cacheable
	}
	entries := make([]*requestv1.CheckResourcesRequest_ResourceEntry, 0, len(checks))
	sent := make([]sentCheck, 0, len(checks))
	for i, ch := range checks {
		uniq, _ := uniqueActions(ch.Actions)
		if subj.err != nil {
			fill(out[i], ch.Actions, denyAll(uniq, false, "invalid authorization request: "+subj.err.Error()))
			continue
		}
		if err := checkAttrs(ch.Resource.Kind+" "+strconv.Quote(ch.Resource.ID), ch.Resource.Attr); err != nil {
			fill(out[i], ch.Actions, denyAll(uniq, false, "invalid authorization request: "+err.Error()))
			continue
		}
		if len(uniq) == 0 {
			fill(out[i], ch.Actions, nil)
			continue
		}
		sc := sentCheck{idx: i, actions: uniq}
		if key, ok := c.cacheable(subj, st, ch.Resource); ok {
			sc.key, sc.actions, sc.known = key, nil, map[string]Decision{}
			for _, a := range uniq {
				if d, ok := c.cache.get(st.Generation, key+a); ok {
					sc.known[a] = d
					continue
				}
				sc.actions = append(sc.actions, a)
			}
			c.hits.Add(uint64(len(sc.known)))
			c.misses.Add(uint64(len(sc.actions)))
			if len(sc.actions) == 0 {
				fill(out[i], ch.Actions, sc.known)
				continue
			}
		} else if c.cache != nil {
			c.misses.Add(uint64(len(uniq)))
		}
		res, err := buildResource(ch.Resource)
		if err != nil {
			fill(out[i], ch.Actions, denyAll(uniq, false, "invalid authorization request: "+err.Error()))
			continue
		}
		entries = append(entries, &requestv1.CheckResourcesRequest_ResourceEntry{Actions: sc.actions, Resource: res})
		sent = append(sent, sc)
	}
	if len(entries) == 0 {
		return out
	}

	callCtx, cancel := c.bound(ctx)
	defer cancel()
	c.requests.Add(1)
	resp, err := c.stub.CheckResources(callCtx, &requestv1.CheckResourcesRequest{
		RequestId:   strconv.FormatUint(rand.Uint64(), 36),
		IncludeMeta: true,
		Principal:   subj.built,
		Resources:   entries,
	}, grpc.WaitForReady(true))
	if err != nil {
		unavailable, reason := c.callFailure(ctx, callCtx, err)
		c.log.Warn("cerbos check failed; denying", "resources", len(entries), "unavailable", unavailable, "error", oneLine(err))
		for _, s := range sent {
			fill(out[s.idx], checks[s.idx].Actions, withKnown(denyAll(s.actions, unavailable, reason), s.known))
		}
		return out
	}

	results := resp.GetResults()
	if len(results) != len(entries) {
		reason := fmt.Sprintf("policy engine unavailable: unexpected response: %d results for %d resources", len(results), len(entries))
		c.log.Warn("cerbos returned a malformed response; denying", "results", len(results), "resources", len(entries))
		for _, s := range sent {
			fill(out[s.idx], checks[s.idx].Actions, withKnown(denyAll(s.actions, true, reason), s.known))
		}
		return out
	}
	for k, s := range sent {
		r := checks[s.idx].Resource
		got := results[k].GetResource()
		if got.GetId() != r.ID || got.GetKind() != r.Kind {
			reason := fmt.Sprintf("policy engine unavailable: unexpected response: result %d is for %s %q, want %s %q", k, got.GetKind(), got.GetId(), r.Kind, r.ID)
			c.log.Warn("cerbos returned results out of order; denying", "result", k)
			fill(out[s.idx], checks[s.idx].Actions, withKnown(denyAll(s.actions, true, reason), s.known))
			continue
		}
		decided := decide(results[k], r, p.Roles, s.actions)
		c.remember(subj, st, r, s.key, results[k], decided)
		fill(out[s.idx], checks[s.idx].Actions, withKnown(decided, s.known))
	}
	return out
}

// withKnown adds the decisions answered from the cache to those of the call.
func withKnown(decided, known map[string]Decision) map[string]Decision {
	for a, d := range known {
		decided[a] = d
	}
	return decided
}

// cacheable returns the decision-key prefix (without the action) for
// checking r as subj under st, or ok=false when the cache may not answer:
// no cache, policies not settled, rules of r's kind read the clock, or the
// PDP has not yet accepted this principal's attributes under st.
func (c *Client) cacheable(subj *subject, st PolicyState, r Resource) (string, bool) {
	if c.cache == nil || st.Reads == nil || st.Reads.ReadsClock(r.Kind) {
		return "", false
	}
	pk, ok := subj.cacheKey(st, r.Kind)
	if !ok {
		return "", false
	}
	return pk + "\x00" + resourceKey(st.Reads, r) + "\x00", true
}

// remember keeps the PDP's decisions for one resource when they may be
// reused: the policies were settled when the check started and still are
// (same generation), the kind's rules do not read the clock, and the PDP
// reported no schema problem. A principal the PDP accepted is marked so,
// letting the next check of that kind use the cache.
func (c *Client) remember(subj *subject, st PolicyState, r Resource, key string, res *responsev1.CheckResourcesResponse_ResultEntry, decided map[string]Decision) {
	if c.cache == nil || st.Reads == nil || st.Reads.ReadsClock(r.Kind) || c.cache.src.PolicyState().Generation != st.Generation {
		return
	}
	principalOK, resourceOK := true, true
	for _, e := range res.GetValidationErrors() {
		if e.GetSource() == schemav1.ValidationError_SOURCE_PRINCIPAL {
			principalOK = false
		} else {
			resourceOK = false
		}
	}
	if !principalOK {
		return
	}
	if key == "" {
		subj.accepted(r.Kind, st.Generation)
		var ok bool
		if key, ok = c.cacheable(subj, st, r); !ok {
			return
		}
	}
	if !resourceOK {
		return
	}
	for a, d := range decided {
		if !d.Unavailable {
			c.cache.put(st.Generation, key+a, d)
		}
	}
}

// callFailure turns a failed RPC into a deny reason. Only InvalidArgument is
// a policy-engine answer ("your request is malformed"); everything else means
// the PDP could not be asked.
func (c *Client) callFailure(parent, callCtx context.Context, err error) (unavailable bool, reason string) {
	st, _ := status.FromError(err)
	switch {
	case st.Code() == codes.InvalidArgument:
		return false, "policy engine rejected the request: " + oneLine(errors.New(st.Message()))
	case parent.Err() != nil:
		return true, "policy engine unavailable: the request was cancelled (" + parent.Err().Error() + ")"
	case callCtx.Err() != nil || st.Code() == codes.DeadlineExceeded:
		return true, fmt.Sprintf("policy engine unavailable: no answer from %s within %s: %s", c.addr, c.timeout, oneLine(errors.New(st.Message())))
	default:
		return true, fmt.Sprintf("policy engine unavailable: %s (%s)", oneLine(errors.New(st.Message())), st.Code())
	}
}

// fill writes decisions for the requested actions in order; an empty action
// name is denied as invalid, an action missing from byAction (none sent) is
// denied as well so no slot is ever left zero-valued-and-silent.
func fill(dst []Decision, requested []string, byAction map[string]Decision) {
	for j, a := range requested {
		if a == "" {
			dst[j] = Decision{Reasons: []string{"invalid authorization request: action names must not be empty"}}
			continue
		}
		d, ok := byAction[a]
		if !ok {
			d = Decision{Reasons: []string{"invalid authorization request: action " + strconv.Quote(a) + " was not checked"}}
		}
		d.Action = a
		dst[j] = d
	}
}

// decide maps one result entry to decisions. An action missing from the
// response is an unexpected response, hence unavailable.
func decide(res *responsev1.CheckResourcesResponse_ResultEntry, r Resource, roles []string, actions []string) map[string]Decision {
	outputs := make(map[string][]Output, len(actions))
	seen := make(map[string]struct{})
	for _, o := range res.GetOutputs() {
		out := Output{Source: o.GetSrc(), Error: o.GetError()}
		if out.Error == "" && o.GetVal() != nil {
			out.Value = o.GetVal().AsInterface()
		}
		// A principal with several roles can fire the same rule once per
		// role; keep one copy.
		key := o.GetAction() + "\x00" + out.Source + "\x00" + out.Error + "\x00" + fmt.Sprint(out.Value)
		if _, dup := seen[key]; dup {
			continue
		}
		seen[key] = struct{}{}
		if o.GetAction() == "" { // PDPs before 0.5x do not tag outputs with the action
			for _, a := range actions {
				outputs[a] = append(outputs[a], out)
			}
			continue
		}
		outputs[o.GetAction()] = append(outputs[o.GetAction()], out)
	}
	schemaReasons := validationReasons(res.GetValidationErrors())

	decisions := make(map[string]Decision, len(actions))
	for _, a := range actions {
		eff, ok := res.GetActions()[a]
		if !ok {
			decisions[a] = Decision{Unavailable: true, Reasons: []string{
				fmt.Sprintf("policy engine unavailable: unexpected response: no effect for action %q on %s %q", a, r.Kind, r.ID),
			}}
			continue
		}
		d := Decision{Allowed: eff == effectv1.Effect_EFFECT_ALLOW, Outputs: outputs[a]}
		if m := res.GetMeta().GetActions()[a]; m != nil {
			d.Policy = m.GetMatchedPolicy()
			if sc := m.GetMatchedScope(); sc != "" {
				d.Policy += " (scope " + sc + ")"
			}
		}
		if !d.Allowed {
			d.Reasons = denyReasons(d, schemaReasons, r, roles, a, eff)
		}
		decisions[a] = d
	}
	return decisions
}

func denyReasons(d Decision, schemaReasons []string, r Resource, roles []string, action string, eff effectv1.Effect) []string {
	reasons := append([]string(nil), schemaReasons...)
	seen := make(map[string]struct{}, len(reasons))
	for _, s := range reasons {
		seen[s] = struct{}{}
	}
	for _, o := range d.Outputs {
		s, ok := o.Value.(string)
		if !ok {
			continue
		}
		s = strings.TrimSpace(s)
		if _, dup := seen[s]; s == "" || dup {
			continue
		}
		seen[s] = struct{}{}
		reasons = append(reasons, s)
	}
	if len(reasons) > 0 {
		return reasons
	}
	switch {
	case eff != effectv1.Effect_EFFECT_DENY:
		return []string{fmt.Sprintf("policy engine returned %s for %q on %s %q; only an explicit allow permits it", eff, action, r.Kind, r.ID)}
	case d.Policy == "" || d.Policy == noPolicyMatch:
		return []string{fmt.Sprintf("no policy covers %q on %s %q; denied by default", action, r.Kind, r.ID)}
	default:
		return []string{fmt.Sprintf("%s has no rule allowing %q on %s %q for roles [%s]; denied by default", d.Policy, action, r.Kind, r.ID, sortedRoles(roles))}
	}
}

func validationReasons(errs []*schemav1.ValidationError) []string {
	if len(errs) == 0 {
		return nil
	}
	out := make([]string, 0, len(errs))
	for _, e := range errs {
		who := "request"
		switch e.GetSource() {
		case schemav1.ValidationError_SOURCE_PRINCIPAL:
			who = "principal"
		case schemav1.ValidationError_SOURCE_RESOURCE:
			who = "resource"
		}
		path := strings.ReplaceAll(strings.Trim(e.GetPath(), "/"), "/", ".")
		if path == "" {
			out = append(out, fmt.Sprintf("%s attributes rejected by the policy schema: %s", who, e.GetMessage()))
			continue
		}
		out = append(out, fmt.Sprintf("%s attribute %q rejected by the policy schema: %s", who, path, e.GetMessage()))
	}
	return out
}

// buildPrincipal converts p to the request's principal and applies the
// rules cerbos.engine.v1.Principal declares (its protovalidate annotations,
// pinned by TestRequestRulesUnchanged and checked against the SDK's full
// validation by TestBuildMatchesSDKValidation): an id, at least one role,
// roles unique and non-empty, attribute names non-empty and values the PDP
// can take. tollgate never sets a policy version or scope.
func buildPrincipal(p Principal) (*enginev1.Principal, error) {
	if err := checkAttrs("principal", p.Attr); err != nil {
		return nil, err
	}
	var problems []string
	if p.ID == "" {
		problems = append(problems, "the id is empty")
	}
	if len(p.Roles) == 0 {
		problems = append(problems, "it has no roles; give it at least one")
	}
	seen := make(map[string]bool, len(p.Roles))
	for _, r := range p.Roles {
		switch {
		case r == "":
			problems = append(problems, "a role is empty")
		case seen[r]:
			problems = append(problems, fmt.Sprintf("role %q is listed twice; roles must be unique", r))
		}
		seen[r] = true
	}
	attr, err := attrValues(p.Attr)
	if err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("principal %q: %s", p.ID, strings.Join(problems, "; "))
	}
	return &enginev1.Principal{Id: p.ID, Roles: p.Roles, Attr: attr}, nil
}

// buildResource converts r (whose attributes checkAttrs has accepted) to
// the request's resource and applies the rules cerbos.engine.v1.Resource
// declares: a kind, an id, attribute names non-empty.
func buildResource(r Resource) (*enginev1.Resource, error) {
	var problems []string
	if r.Kind == "" {
		problems = append(problems, "the kind is empty")
	}
	if r.ID == "" {
		problems = append(problems, "the id is empty")
	}
	attr, err := attrValues(r.Attr)
	if err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("resource %s %q: %s", r.Kind, r.ID, strings.Join(problems, "; "))
	}
	return &enginev1.Resource{Kind: r.Kind, Id: r.ID, Attr: attr}, nil
}

// attrValues converts attributes to protobuf values as the PDP receives
// them: structpb's conversion, times as RFC 3339 strings (seconds), other
// slices and string-keyed maps element by element.
func attrValues(attrs map[string]any) (map[string]*structpb.Value, error) {
	if len(attrs) == 0 {
		return nil, nil
	}
	out := make(map[string]*structpb.Value, len(attrs))
	for k, v := range attrs {
		if k == "" {
			return nil, errors.New("an attribute has an empty name")
		}
		pv, err := toValue(v)
		if err != nil {
			return nil, fmt.Errorf("attribute %q: %w", k, err)
		}
		out[k] = pv
	}
	return out, nil
}

func toValue(v any) (*structpb.Value, error) {
	pv, err := structpb.NewValue(v)
	if err == nil {
		return pv, nil
	}
	if t, ok := v.(time.Time); ok {
		return structpb.NewStringValue(t.Format(time.RFC3339)), nil
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Array, reflect.Slice:
		list := make([]*structpb.Value, rv.Len())
		for i := range rv.Len() {
			if list[i], err = toValue(rv.Index(i).Interface()); err != nil {
				return nil, err
			}
		}
		return structpb.NewListValue(&structpb.ListValue{Values: list}), nil
	case reflect.Map:
		if rv.Type().Key().Kind() == reflect.String {
			fields := make(map[string]*structpb.Value, rv.Len())
			for it := rv.MapRange(); it.Next(); {
				if fields[it.Key().String()], err = toValue(it.Value().Interface()); err != nil {
					return nil, err
				}
			}
			return structpb.NewStructValue(&structpb.Struct{Fields: fields}), nil
		}
	}
	return nil, err
}

// checkAttrs rejects attribute values that would not reach the PDP exactly:
// integers beyond 2^53 (protobuf numbers are float64), NaN and infinities,
// invalid UTF-8, unsupported types and runaway nesting.
func checkAttrs(owner string, attrs map[string]any) error {
	for k, v := range attrs {
		if k == "" {
			return fmt.Errorf("%s has an attribute with an empty name", owner)
		}
		if err := checkValue(v, 0); err != nil {
			return fmt.Errorf("%s attribute %q: %w", owner, k, err)
		}
	}
	return nil
}

var timeType = reflect.TypeFor[time.Time]()

func checkValue(v any, depth int) error {
	if depth > maxAttrDepth {
		return fmt.Errorf("nested deeper than %d levels", maxAttrDepth)
	}
	if v == nil {
		return nil
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Bool:
		return nil
	case reflect.String:
		if !utf8.ValidString(rv.String()) {
			return errors.New("string is not valid UTF-8")
		}
		return nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if n := rv.Int(); n > maxExactInt || n < -maxExactInt {
			return fmt.Errorf("integer %d is beyond ±2^53 and would lose precision", n)
		}
		return nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		if n := rv.Uint(); n > maxExactInt {
			return fmt.Errorf("integer %d is beyond 2^53 and would lose precision", n)
		}
		return nil
	case reflect.Float32, reflect.Float64:
		if f := rv.Float(); math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("number %v is not finite", f)
		}
		return nil
	case reflect.Slice, reflect.Array:
		if rv.Type().Elem().Kind() == reflect.Uint8 {
			return nil // []byte travels as base64
		}
		for i := range rv.Len() {
			if err := checkValue(rv.Index(i).Interface(), depth+1); err != nil {
				return fmt.Errorf("[%d]: %w", i, err)
			}
		}
		return nil
	case reflect.Map:
		if rv.Type().Key().Kind() != reflect.String {
			return fmt.Errorf("map keys must be strings, got %s", rv.Type().Key())
		}
		iter := rv.MapRange()
		for iter.Next() {
			if err := checkValue(iter.Value().Interface(), depth+1); err != nil {
				return fmt.Errorf(".%s: %w", iter.Key().String(), err)
			}
		}
		return nil
	case reflect.Struct:
		if rv.Type() == timeType {
			return nil
		}
	}
	return fmt.Errorf("unsupported type %T (use strings, bools, numbers, time.Time, slices or string-keyed maps)", v)
}

// oneLine flattens multi-line validation errors into one reason sentence.
func oneLine(err error) string {
	fields := strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; "))
	return strings.ReplaceAll(strings.Join(fields, " "), "; ;", ";")
}
