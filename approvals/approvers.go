package approvals

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/tollgatehq/tollgate/ledger/store"
)

// EventApproversPublished records a change of the approver set a server serves.
const EventApproversPublished = "approval.approvers_published"

// PublishApprovers records this service's approvers in the database, so the
// local approver CLI acts on the set the server was configured with. Called
// by the server on start; audited when the set changes.
func (s *Service) PublishApprovers(ctx context.Context) error {
	current, err := StoredApprovers(ctx, s.st)
	if err != nil {
		return err
	}
	want := slices.Clone(s.o.Approvers)
	if sameApprovers(current, want) {
		return nil
	}
	return s.st.Write(ctx, func(tx *store.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM approval_approvers`); err != nil {
			return fmt.Errorf("publish approvers: %w", err)
		}
		now := s.now().UnixNano()
		var names []string
		for _, a := range want {
			roles, err := json.Marshal(a.Roles)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO approval_approvers (name, slack_user_id, os_user, roles, published_at) VALUES (?, ?, ?, ?, ?)`,
				a.Name, a.SlackUserID, a.OSUser, string(roles), now); err != nil {
				return fmt.Errorf("publish approvers: %w", err)
			}
			names = append(names, a.Name)
		}
		return s.o.Audit(ctx, tx, EventApproversPublished, "system", "", map[string]any{"approvers": names})
	})
}

// StoredApprovers returns the approvers the serving tollgate published, or
// none if no server has run on this database yet.
func StoredApprovers(ctx context.Context, q store.Queryer) ([]Approver, error) {
	rows, err := q.QueryContext(ctx, `SELECT name, slack_user_id, os_user, roles FROM approval_approvers ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("read approvers: %w", err)
	}
	defer rows.Close()
	var out []Approver
	for rows.Next() {
		var a Approver
		var roles string
		if err := rows.Scan(&a.Name, &a.SlackUserID, &a.OSUser, &roles); err != nil {
			return nil, fmt.Errorf("read approvers: %w", err)
		}
		if err := json.Unmarshal([]byte(roles), &a.Roles); err != nil {
			return nil, fmt.Errorf("read approvers: roles of %s: %w", a.Name, err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

func sameApprovers(a, b []Approver) bool {
	key := func(x []Approver) []string {
		var k []string
		for _, v := range x {
			r, _ := json.Marshal(v)
			k = append(k, string(r))
		}
		slices.Sort(k)
		return k
	}
	return slices.Equal(key(a), key(b))
}

// Eligible returns the configured approvers who could approve r: neither
// the agent nor its owner, and allowed to approve it by the policy. A
// request whose quorum is above len(Eligible) can never be approved; the
// server says so at start and in estimate_cost rather than letting it wait.
// An approver the policy engine could not be asked about does not count
// (fail closed). It stops once it found enough (want > 0), so asking
// whether a quorum can be met costs one policy check per vote needed when it can.
func (s *Service) Eligible(ctx context.Context, r Request, want int) []string {
	var out []string
	for _, a := range s.o.Approvers {
		if want > 0 && len(out) >= want {
			break
		}
		if isSelf(a, r) {
			continue
		}
		if ok, _, err := s.o.Authorizer(ctx, a, r, OutcomeApprove); err != nil || !ok {
			continue
		}
		out = append(out, a.Name)
	}
	return out
}
