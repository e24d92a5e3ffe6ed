package cloudflare

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"time"

	"github.com/cloudflare/cloudflare-go/v6/accounts"
	"github.com/cloudflare/cloudflare-go/v6/shared"
)

// DefaultRotateEvery is how old the parent token's value may get before a
// serving tollgate rolls it.
const DefaultRotateEvery = 30 * 24 * time.Hour

// Rotation is one roll of the parent token's value, as audited: never the
// value itself.
type Rotation struct {
	TokenID string
	// Source is where the token came from and the new value went.
	Source string
	// Scheduled is true for a rotation RunRotation started, false for an
	// explicit Rotate (tollgate credentials rotate).
	Scheduled bool
	At        time.Time
	// Err is "" when the new value was rolled, verified and stored.
	Err string
}

// Rotate rolls the parent token's value now: PUT tokens/{id}/value, verify
// the new value, and write it to the source. Mints wait while it runs. If
// the source cannot be written (an environment variable) nothing is rolled
// and the error wraps ErrParentReadOnly. The rotation is reported to
// Config.OnRotation whether it succeeded or not.
func (b *Broker) Rotate(ctx context.Context) (Rotation, error) {
	rec, _, err := b.rotate(ctx, false, 0)
	return rec, err
}

// RotateIfDue rolls the parent token when its value is at least every old
// (since the source last changed or Cloudflare last modified the token),
// and reports whether it did.
func (b *Broker) RotateIfDue(ctx context.Context, every time.Duration) (Rotation, bool, error) {
	return b.rotate(ctx, true, every)
}

// RunRotation rotates the parent token every `every` while ctx lasts,
// checking every check (default an hour). A source that cannot be written
// is reported once and the loop ends: there is nothing it could do.
func (b *Broker) RunRotation(ctx context.Context, every, check time.Duration) {
	if every <= 0 {
		return
	}
	if err := b.source.Writable(); err != nil {
		b.log.LogAttrs(ctx, slog.LevelWarn, "the cloudflare parent token will not be rotated on schedule",
			slog.String(logSource, b.source.String()), slog.String(logErr, err.Error()))
		return
	}
	if check <= 0 {
		check = time.Hour
	}
	t := time.NewTicker(min(check, every))
	defer t.Stop()
	for {
		if _, _, err := b.RotateIfDue(ctx, every); err != nil && ctx.Err() == nil {
			b.log.LogAttrs(ctx, slog.LevelError, "scheduled rotation of the cloudflare parent token failed; retrying at the next check",
				slog.String(logSource, b.source.String()), slog.String(logErr, err.Error()))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (b *Broker) rotate(ctx context.Context, scheduled bool, every time.Duration) (rec Rotation, rotated bool, err error) {
	rec = Rotation{Source: b.source.String(), Scheduled: scheduled}
	// Only an attempted roll is recorded: a check that found nothing due,
	// or a failure before the roll (read-only source, verify), changed
	// nothing.
	attempted := false
	defer func() {
		if !attempted {
			return
		}
		rec.At = b.cfg.Clock().UTC()
		if err != nil {
			rec.Err = err.Error()
		}
		if b.cfg.OnRotation != nil {
			if aerr := b.cfg.OnRotation(ctx, rec); aerr != nil {
				err = errors.Join(err, fmt.Errorf("record the rotation: %w", aerr))
			}
		}
	}()
	if err := b.source.Writable(); err != nil {
		return rec, false, fmt.Errorf("rotate the cloudflare parent token: %w", err)
	}
	if l, ok := b.source.(sourceLocker); ok {
		unlock, err := l.Lock()
		if err != nil {
			return rec, false, fmt.Errorf("rotate the cloudflare parent token: %w", err)
		}
		defer unlock()
	}
	b.parentMu.Lock()
	defer b.parentMu.Unlock()
	// Another process sharing the source may have rotated it already.
	if v, rerr := b.source.Read(); rerr == nil && v != b.parent {
		b.parent = v
	}
	old := b.parent
	ver, err := b.verifyWith(ctx, old, "rotate")
	if err != nil {
		return rec, false, fmt.Errorf("rotate the cloudflare parent token: verify the current value: %w", err)
	}
	rec.TokenID = ver.ID
	if scheduled {
		last, err := b.lastRolled(ctx, old, ver.ID)
		if err != nil {
			return rec, false, fmt.Errorf("rotate the cloudflare parent token: %w", err)
		}
		if b.cfg.Clock().Sub(last) < every {
			return rec, false, nil
		}
	}
	attempted = true
	var rolled string
	err = b.mutate(ctx, func(ctx context.Context) error {
		var p accounts.TokenValueUpdateParams
		p.AccountID.Value, p.AccountID.Present = b.cfg.AccountID, true
		p.Body = map[string]any{}
		res, err := accounts.NewTokenValueService(b.clientOptions(old, "", "rotate", "", false)...).Update(ctx, ver.ID, p)
		if err == nil {
			rolled = *res
		}
		return err
	})
	if err == nil && checkToken(rolled) != nil {
		err = errors.New("the roll answered without a usable value")
	}
	if err != nil {
		if !ambiguous(err) {
			return rec, false, fmt.Errorf("rotate the cloudflare parent token %s: roll: %w", ver.ID, err)
		}
		// The roll may have happened with its answer lost: then the old value
		// is dead and the new one unknown.
		if _, verr := b.verifyWith(ctx, old, "rotate"); verr == nil {
			return rec, false, fmt.Errorf("rotate the cloudflare parent token %s: roll failed and the current value still works: %w", ver.ID, err)
		}
		b.log.LogAttrs(ctx, slog.LevelError, "the cloudflare parent token may have been rolled without its new value reaching tollgate; create a new parent token",
			slog.String(logTokenID, ver.ID), slog.String(logSource, b.source.String()))
		return rec, false, fmt.Errorf("rotate the cloudflare parent token %s: the roll's answer was lost and the old value no longer works; create a new token with Account API Tokens Write and Read and put it in %s: %w", ver.ID, b.source, err)
	}
	b.parent = rolled
	var errs []error
	if nv, verr := b.verifyWith(ctx, rolled, "rotate"); verr != nil || nv.ID != ver.ID {
		errs = append(errs, fmt.Errorf("verify the new value: %v", errors.Join(verr, idMismatch(nv, ver.ID))))
	}
	if werr := b.source.Write(rolled); werr != nil {
		// The new value lives only in this process now: keep serving with it
		// and say so loudly; the next successful rotation stores a value.
		b.log.LogAttrs(ctx, slog.LevelError, "the rolled cloudflare parent token could not be stored; this process keeps it in memory only",
			slog.String(logTokenID, ver.ID), slog.String(logSource, b.source.String()), slog.String(logErr, werr.Error()))
		errs = append(errs, werr)
	}
	b.log.LogAttrs(ctx, slog.LevelInfo, "rotated the cloudflare parent token",
		slog.String(logTokenID, ver.ID), slog.String(logSource, b.source.String()), slog.Bool(logScheduled, scheduled))
	if len(errs) > 0 {
		return rec, true, fmt.Errorf("rotate the cloudflare parent token %s: rolled, but %w", ver.ID, errors.Join(errs...))
	}
	return rec, true, nil
}

func idMismatch(v *accounts.TokenVerifyResponse, want string) error {
	if v != nil && v.ID != want {
		return fmt.Errorf("the new value belongs to token %s, not %s", v.ID, want)
	}
	return nil
}

// verifyWith verifies a value of the parent token (which need not be the
// one in use) and requires it active.
func (b *Broker) verifyWith(ctx context.Context, token, label string) (*accounts.TokenVerifyResponse, error) {
	var res *accounts.TokenVerifyResponse
	err := b.read(ctx, func(ctx context.Context) error {
		var p accounts.TokenVerifyParams
		p.AccountID.Value, p.AccountID.Present = b.cfg.AccountID, true
		var err error
		res, err = accounts.NewTokenService(b.clientOptions(token, "", label, "", false)...).Verify(ctx, p)
		return err
	})
	if err != nil {
		return nil, err
	}
	if res.Status != accounts.TokenVerifyResponseStatusActive {
		return nil, fmt.Errorf("status is %q, want active", res.Status)
	}
	return res, nil
}

// token reads a token's details with the given parent value.
func (b *Broker) token(ctx context.Context, parent, id, label string) (*shared.Token, error) {
	var res *shared.Token
	err := b.read(ctx, func(ctx context.Context) error {
		var p accounts.TokenGetParams
		p.AccountID.Value, p.AccountID.Present = b.cfg.AccountID, true
		var err error
		res, err = accounts.NewTokenService(b.clientOptions(parent, "", label, "", false)...).Get(ctx, id, p)
		return err
	})
	return res, err
}

// lastRolled is when the parent token's value last changed, as far as
// anyone can tell: the latest of the source's own change time and
// Cloudflare's issued_on and modified_on.
func (b *Broker) lastRolled(ctx context.Context, parent, id string) (time.Time, error) {
	tok, err := b.token(ctx, parent, id, "rotate")
	if err != nil {
		return time.Time{}, fmt.Errorf("read token %s: %w", id, err)
	}
	last := latest(tok.IssuedOn, tok.ModifiedOn)
	if m, ok := b.source.(sourceModTimer); ok {
		if t, err := m.Modified(); err == nil {
			last = latest(last, t)
		}
	}
	return last, nil
}

func latest(ts ...time.Time) time.Time {
	var out time.Time
	for _, t := range ts {
		if t.After(out) {
			out = t
		}
	}
	return out
}

// ParentStatus is what `tollgate credentials status` shows about the parent
// token. It never holds the value.
type ParentStatus struct {
	Source string
	// NotWritable is why the source cannot store a rotated value ("" when
	// it can).
	NotWritable string
	TokenID     string
	Name        string
	Status      string
	IssuedOn    time.Time
	ModifiedOn  time.Time
	// LastRolled is when the value last changed (see RotateIfDue).
	LastRolled time.Time
	// ExpiresOn is zero when the token never expires.
	ExpiresOn time.Time
	Policies  []PolicyStatus
}

// PolicyStatus is one of the token's policies.
type PolicyStatus struct {
	Effect    string   `json:"effect"`
	Groups    []string `json:"groups"`
	Resources []string `json:"resources"` // nested resources as "account > zone"
}

// ParentStatus verifies the parent token and reads its details.
func (b *Broker) ParentStatus(ctx context.Context) (ParentStatus, error) {
	st := ParentStatus{Source: b.source.String()}
	if err := b.source.Writable(); err != nil {
		st.NotWritable = err.Error()
	}
	err := b.withParent(ctx, func(parent string) error {
		ver, err := b.verifyWith(ctx, parent, "status")
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		tok, err := b.token(ctx, parent, ver.ID, "status")
		if err != nil {
			return fmt.Errorf("read token %s: %w", ver.ID, err)
		}
		st.TokenID, st.Name, st.Status = tok.ID, tok.Name, string(tok.Status)
		st.IssuedOn, st.ModifiedOn, st.ExpiresOn = tok.IssuedOn, tok.ModifiedOn, tok.ExpiresOn
		st.LastRolled = latest(tok.IssuedOn, tok.ModifiedOn)
		if m, ok := b.source.(sourceModTimer); ok {
			if t, err := m.Modified(); err == nil {
				st.LastRolled = latest(st.LastRolled, t)
			}
		}
		st.Policies = policyStatuses(tok.Policies)
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("cloudflare parent token status: %w", err)
	}
	return st, nil
}

func policyStatuses(pols []shared.TokenPolicy) []PolicyStatus {
	out := make([]PolicyStatus, 0, len(pols))
	for _, p := range pols {
		ps := PolicyStatus{Effect: string(p.Effect)}
		for _, g := range p.PermissionGroups {
			ps.Groups = append(ps.Groups, g.Name)
		}
		switch r := p.Resources.(type) {
		case shared.TokenPolicyResourcesIAMResourcesTypeObjectString:
			for k := range r {
				ps.Resources = append(ps.Resources, k)
			}
		case shared.TokenPolicyResourcesIAMResourcesTypeObjectNested:
			for k, inner := range r {
				for z := range inner {
					ps.Resources = append(ps.Resources, k+" > "+z)
				}
			}
		}
		sort.Strings(ps.Groups)
		sort.Strings(ps.Resources)
		out = append(out, ps)
	}
	slices.SortStableFunc(out, func(a, b PolicyStatus) int {
		if a.Effect != b.Effect {
			if a.Effect == "allow" {
				return -1
			}
			return 1
		}
		return 0
	})
	return out
}
