package cloudflare

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/cloudflare/cloudflare-go/v6/accounts"
	"github.com/cloudflare/cloudflare-go/v6/shared"
)

// TokenNamePrefix starts the name of every token the Broker mints; Sweep
// deletes leftovers by it.
const TokenNamePrefix = "tollgate:"

// labelRE is what a session label may contain: it becomes part of the
// token's name, where ':' separates fields.
var labelRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// Broker holds the parent credential and mints one short-lived, least-
// privilege account token per Session. The parent token is kept in an
// unexported field with no getter; nothing outside this package can read it.
type Broker struct {
	cfg    Config // ParentToken cleared
	parent string
	log    *slog.Logger

	groupsMu sync.Mutex
	groups   map[string]string // permission group name -> id

	mu   sync.Mutex
	live map[string]bool // minted token ids not yet deleted
}

// NewBroker validates cfg and returns a Broker. No request is made.
func NewBroker(cfg Config) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cloudflare config: %w", err)
	}
	cfg = cfg.withDefaults()
	b := &Broker{parent: cfg.ParentToken, log: cfg.Logger, live: map[string]bool{}}
	cfg.ParentToken = ""
	b.cfg = cfg
	warmEncoders.Do(func() {
		// cloudflare-go v6.10.0's JSON encoder builds the encoder for an
		// interface field's dynamic type on first use through a shared,
		// mutated encoder value: two goroutines minting their first tokens
		// at once race there (go test -race sees it). Encoding one token
		// body up front fills that cache before any concurrency.
		warm := &Broker{cfg: b.cfg}
		warm.cfg.RequestIP = "127.0.0.1"
		_, _ = warm.tokenParams("warm-up", []string{"0"}, time.Unix(0, 0)).MarshalJSON()
	})
	return b, nil
}

var warmEncoders sync.Once

// tokens is a parent-token client, its requests attributed to the session
// (p, label) it works for.
func (b *Broker) tokens(p Purpose, label string) *accounts.TokenService {
	return accounts.NewTokenService(b.clientOptions(b.parent, p, label, "", false)...)
}

// revoker is the parent-token client for finding and deleting tokens, which
// an Observer failure must not stop.
func (b *Broker) revoker(p Purpose, label string) *accounts.TokenService {
	return accounts.NewTokenService(b.clientOptions(b.parent, p, label, "", true)...)
}

// Alive is the number of tokens this Broker minted and has not yet deleted.
func (b *Broker) Alive() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.live)
}

// Ping verifies the parent token (for /healthz): it must be active.
func (b *Broker) Ping(ctx context.Context) error {
	var res *accounts.TokenVerifyResponse
	err := b.read(ctx, func(ctx context.Context) error {
		var p accounts.TokenVerifyParams
		p.AccountID.Value, p.AccountID.Present = b.cfg.AccountID, true
		var err error
		res, err = b.tokens("", "ping").Verify(ctx, p)
		return err
	})
	if err != nil {
		return fmt.Errorf("verify cloudflare parent token: %w", err)
	}
	if res.Status != accounts.TokenVerifyResponseStatusActive {
		return fmt.Errorf("verify cloudflare parent token: status is %q, want active", res.Status)
	}
	return nil
}

// groupIDs resolves permission-group names to ids, from a cache filled from
// the permission-groups endpoint (refreshed once when a name is missing).
func (b *Broker) groupIDs(ctx context.Context, p Purpose, label string, names []string) ([]string, error) {
	b.groupsMu.Lock()
	defer b.groupsMu.Unlock()
	lookup := func() ([]string, []string) {
		var ids, missing []string
		for _, n := range names {
			if id, ok := b.groups[n]; ok {
				ids = append(ids, id)
			} else {
				missing = append(missing, n)
			}
		}
		return ids, missing
	}
	if ids, missing := lookup(); len(missing) == 0 {
		return ids, nil
	}
	var list []accounts.TokenPermissionGroupListResponse
	err := b.read(ctx, func(ctx context.Context) error {
		var q accounts.TokenPermissionGroupListParams
		q.AccountID.Value, q.AccountID.Present = b.cfg.AccountID, true
		page, err := b.tokens(p, label).PermissionGroups.List(ctx, q)
		if err != nil {
			return err
		}
		list = page.Result
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list permission groups: %w", err)
	}
	groups := map[string]string{}
	for _, g := range list {
		for _, s := range g.Scopes {
			// Only account-scoped groups: the tokens name the account alone.
			if s == accounts.TokenPermissionGroupListResponseScopeComCloudflareAPIAccount {
				groups[g.Name] = g.ID
			}
		}
	}
	b.groups = groups
	ids, missing := lookup()
	if len(missing) > 0 {
		return nil, fmt.Errorf("list permission groups: the account has no account-scoped group named %s", strings.Join(quoteAll(missing), ", "))
	}
	return ids, nil
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}

// Session mints a token named "tollgate:<purpose>:<label>:<random>" holding
// exactly p's permission groups on the account alone, expiring TokenTTL from
// now (and bound to RequestIP if configured), and returns a Session whose
// calls all use that token. Close it when the operation is done.
func (b *Broker) Session(ctx context.Context, p Purpose, label string) (*Session, error) {
	if !p.Valid() {
		return nil, fmt.Errorf("cloudflare session: purpose %q is not one of %v", p, Purposes())
	}
	if !labelRE.MatchString(label) {
		return nil, fmt.Errorf("cloudflare session: label %q: want 1 to 64 letters, digits, '.', '_' or '-'", label)
	}
	groupNames := p.PermissionGroups()
	ids, err := b.groupIDs(ctx, p, label, groupNames)
	if err != nil {
		return nil, fmt.Errorf("mint %s token: %w", p, err)
	}
	suffix := make([]byte, 8)
	if _, err := rand.Read(suffix); err != nil {
		return nil, fmt.Errorf("mint %s token: %w", p, err)
	}
	name := TokenNamePrefix + string(p) + ":" + label + ":" + hex.EncodeToString(suffix)
	expires := b.cfg.Clock().Add(b.cfg.TokenTTL).UTC().Truncate(time.Second)

	var res *accounts.TokenNewResponse
	if ctx.Err() != nil {
		return nil, fmt.Errorf("mint %s token: %w", p, ctx.Err())
	}
	err = b.mutate(ctx, func(ctx context.Context) error {
		params := b.tokenParams(name, ids, expires)
		var err error
		res, err = b.tokens(p, label).New(ctx, params)
		return err
	})
	if err == nil && (res.ID == "" || res.Value == "") {
		err = errors.New("token create answered without an id or value")
	}
	if err != nil {
		if ambiguous(err) {
			// The token may exist without us knowing its id: find it by its
			// unique name and delete it now rather than leave it to Sweep.
			b.deleteByName(ctx, p, label, name)
		}
		return nil, fmt.Errorf("mint %s token: %w", p, err)
	}
	b.mu.Lock()
	b.live[res.ID] = true
	b.mu.Unlock()
	b.log.LogAttrs(ctx, slog.LevelDebug, "minted cloudflare token",
		slog.String(logPurpose, string(p)), slog.String(logLabel, label), slog.String(logTokenID, res.ID),
		slog.Time(logExpires, expires), slog.Any(logGroups, groupNames))
	return &Session{
		Purpose: p, Label: label, TokenID: res.ID, ExpiresAt: expires, PermissionGroups: groupNames,
		b: b, token: res.Value,
	}, nil
}

// tokenParams is the create body: one allow policy, the groups, the account
// as the only resource, the expiry and the optional IP condition.
func (b *Broker) tokenParams(name string, groupIDs []string, expires time.Time) accounts.TokenNewParams {
	var params accounts.TokenNewParams
	params.AccountID.Value, params.AccountID.Present = b.cfg.AccountID, true
	params.Name.Value, params.Name.Present = name, true
	var pol shared.TokenPolicyParam
	pol.Effect.Value, pol.Effect.Present = shared.TokenPolicyEffectAllow, true
	groups := make([]shared.TokenPolicyPermissionGroupParam, len(groupIDs))
	for i, id := range groupIDs {
		groups[i].ID.Value, groups[i].ID.Present = id, true
	}
	pol.PermissionGroups.Value, pol.PermissionGroups.Present = groups, true
	pol.Resources.Value = shared.TokenPolicyResourcesIAMResourcesTypeObjectStringParam{
		"com.cloudflare.api.account." + b.cfg.AccountID: "*",
	}
	pol.Resources.Present = true
	params.Policies.Value, params.Policies.Present = []shared.TokenPolicyParam{pol}, true
	params.ExpiresOn.Value, params.ExpiresOn.Present = expires, true
	if b.cfg.RequestIP != "" {
		cidr, _ := requestCIDR(b.cfg.RequestIP) // validated by NewBroker
		var ip accounts.TokenNewParamsConditionRequestIP
		ip.In.Value, ip.In.Present = []string{cidr}, true
		var cond accounts.TokenNewParamsCondition
		cond.RequestIP.Value, cond.RequestIP.Present = ip, true
		params.Condition.Value, params.Condition.Present = cond, true
	}
	return params
}

// deleteToken deletes a minted token with the parent token, retrying with
// backoff; a 404 means it is already gone. Deleting is idempotent, so every
// failure but a clean refusal is retried.
func (b *Broker) deleteToken(ctx context.Context, p Purpose, label, id string) error {
	wait := b.cfg.RetryBackoff
	var err error
	for n := 1; n <= b.cfg.DeleteAttempts; n++ {
		cctx, ci := withCall(ctx)
		var params accounts.TokenDeleteParams
		params.AccountID.Value, params.AccountID.Present = b.cfg.AccountID, true
		_, err = b.revoker(p, label).Delete(cctx, id, params)
		err = mapError(err, ci)
		var ae *APIError
		switch {
		case err == nil, errors.Is(err, ErrNotFound):
			b.mu.Lock()
			delete(b.live, id)
			b.mu.Unlock()
			return nil
		case errors.As(err, &ae) && ae.Status < 500 && ae.Status != 429:
			return err // refused (e.g. the parent token lost its permission): retrying won't help
		case ctx.Err() != nil:
			return err
		}
		if n < b.cfg.DeleteAttempts {
			b.log.LogAttrs(ctx, slog.LevelDebug, "retrying cloudflare token delete",
				slog.String(logTokenID, id), slog.Int(logAttempt, n), slog.Duration(logWait, wait), slog.String(logErr, err.Error()))
			if serr := sleep(ctx, min(wait, b.cfg.MaxRetryWait)); serr != nil {
				return err
			}
			wait *= 2
		}
	}
	return err
}

// listTokens returns every account token, page by page.
func (b *Broker) listTokens(ctx context.Context, p Purpose, label string) ([]shared.Token, error) {
	const perPage = 50
	var all []shared.Token
	for page := 1; ; page++ {
		var got []shared.Token
		err := b.read(ctx, func(ctx context.Context) error {
			var q accounts.TokenListParams
			q.AccountID.Value, q.AccountID.Present = b.cfg.AccountID, true
			q.Page.Value, q.Page.Present = float64(page), true
			q.PerPage.Value, q.PerPage.Present = perPage, true
			res, err := b.revoker(p, label).List(ctx, q)
			if err != nil {
				return err
			}
			got = res.Result
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("list account tokens (page %d): %w", page, err)
		}
		all = append(all, got...)
		if len(got) < perPage {
			return all, nil
		}
	}
}

// deleteByName cleans up after an ambiguous create: it runs even when ctx is
// done, bounded by CloseTimeout, and only logs failures (Sweep retries).
func (b *Broker) deleteByName(ctx context.Context, p Purpose, label, name string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.cfg.CloseTimeout)
	defer cancel()
	toks, err := b.listTokens(ctx, p, label)
	if err != nil {
		b.log.LogAttrs(ctx, slog.LevelWarn, "could not look for a half-created cloudflare token; Sweep will delete it",
			slog.String(logPurpose, string(p)), slog.String(logLabel, label), slog.String(logErr, err.Error()))
		return
	}
	for _, t := range toks {
		if t.Name != name {
			continue
		}
		if err := b.deleteToken(ctx, p, label, t.ID); err != nil {
			b.log.LogAttrs(ctx, slog.LevelWarn, "could not delete a half-created cloudflare token; Sweep will delete it",
				slog.String(logTokenID, t.ID), slog.String(logErr, err.Error()))
			continue
		}
		b.log.LogAttrs(ctx, slog.LevelInfo, "deleted half-created cloudflare token", slog.String(logTokenID, t.ID))
	}
}

// Sweep deletes every account token named with TokenNamePrefix that this
// Broker does not hold: the leftovers of a crashed process. Run it on start.
// It assumes one tollgate server per Cloudflare account.
func (b *Broker) Sweep(ctx context.Context) (int, error) {
	toks, err := b.listTokens(ctx, "", "sweep")
	if err != nil {
		return 0, fmt.Errorf("sweep tokens: %w", err)
	}
	deleted := 0
	var errs []error
	for _, t := range toks {
		if !strings.HasPrefix(t.Name, TokenNamePrefix) {
			continue
		}
		b.mu.Lock()
		mine := b.live[t.ID]
		b.mu.Unlock()
		if mine {
			continue
		}
		if err := b.deleteToken(ctx, "", "sweep", t.ID); err != nil {
			errs = append(errs, fmt.Errorf("delete token %s: %w", t.ID, err))
			continue
		}
		deleted++
	}
	b.log.LogAttrs(ctx, slog.LevelInfo, "swept leftover cloudflare tokens", slog.Int(logCount, deleted))
	if len(errs) > 0 {
		return deleted, fmt.Errorf("sweep tokens: %w", errors.Join(errs...))
	}
	return deleted, nil
}
