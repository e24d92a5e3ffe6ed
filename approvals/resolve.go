package approvals

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// MinPrefix is the shortest id prefix Resolve accepts.
const MinPrefix = 6

// ShortIDLen is the length of ShortID: long enough that two requests
// sharing it are rare (40 random bits), short enough to type.
const ShortIDLen = 8

// ShortID is the part of a request id people type: the first ShortIDLen
// characters after "apr_".
func ShortID(id string) string {
	s := strings.TrimPrefix(id, "apr_")
	if len(s) > ShortIDLen {
		s = s[:ShortIDLen]
	}
	return s
}

// ErrAmbiguous: an id prefix that more than one request starts with.
var ErrAmbiguous = errors.New("ambiguous approval id")

// AmbiguousError lists the requests an id prefix matches.
type AmbiguousError struct {
	Prefix     string
	Candidates []Request
}

func (e *AmbiguousError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %q matches %d requests; give more characters:", ErrAmbiguous.Error(), e.Prefix, len(e.Candidates))
	for _, r := range e.Candidates {
		fmt.Fprintf(&b, "\n  %s  %s  %s", r.ID, r.State, clip(r.Summary, 80))
	}
	return b.String()
}

// Unwrap makes errors.Is(err, ErrAmbiguous) hold.
func (e *AmbiguousError) Unwrap() error { return ErrAmbiguous }

var prefixPattern = regexp.MustCompile(`^[a-z0-9]+$`)

// maxCandidates bounds the requests an ambiguous prefix lists.
const maxCandidates = 10

// Resolve finds the request a person means by ref: a full request id
// ("apr_…"), an operation id ("op_…"), or a unique prefix of at least
// MinPrefix characters of a request id, with or without "apr_". A prefix
// that several requests share is an *AmbiguousError naming them.
func (s *Service) Resolve(ctx context.Context, ref string) (Request, error) {
	ref = strings.TrimSpace(ref)
	if strings.HasPrefix(ref, "op_") {
		return s.ByOperation(ctx, ref)
	}
	// A full id is the one id it is a prefix of.
	p := strings.TrimPrefix(strings.ToLower(ref), "apr_")
	if len(p) < MinPrefix || !prefixPattern.MatchString(p) {
		return Request{}, fmt.Errorf("%w: %q is not an approval reference: give an approval id (apr_…), at least %d of its first characters, or an operation id (op_…)", ErrInvalidInput, clip(ref, 80), MinPrefix)
	}
	full := "apr_" + p
	// substr, not LIKE: "_" is a LIKE wildcard, and substr reads the same in SQLite and PostgreSQL.
	rows, err := s.st.QueryContext(ctx, `SELECT id FROM approval_requests WHERE substr(id, 1, ?) = ? ORDER BY created_at DESC, id LIMIT ?`, len(full), full, maxCandidates+1)
	if err != nil {
		return Request{}, fmt.Errorf("resolve approval %s: %w", full, err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return Request{}, fmt.Errorf("resolve approval %s: %w", full, err)
		}
		ids = append(ids, id)
	}
	if err := rows.Close(); err != nil {
		return Request{}, fmt.Errorf("resolve approval %s: %w", full, err)
	}
	switch len(ids) {
	case 0:
		return Request{}, fmt.Errorf("approval %s…: %w", full, ErrNotFound)
	case 1:
		return s.Get(ctx, ids[0])
	}
	amb := &AmbiguousError{Prefix: ref}
	for _, id := range ids[:min(len(ids), maxCandidates)] {
		r, err := s.Get(ctx, id)
		if err != nil {
			return Request{}, err
		}
		amb.Candidates = append(amb.Candidates, r)
	}
	return Request{}, amb
}
