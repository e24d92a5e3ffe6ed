package store

import "testing"

func TestRebindDollar(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ in, want string }{
		{`SELECT a FROM t WHERE x = ? AND y = ?`, `SELECT a FROM t WHERE x = $1 AND y = $2`},
		{`UPDATE t SET a = ?2 WHERE id = ?1`, `UPDATE t SET a = $2 WHERE id = $1`},
		{`SELECT ?6 AS s UNION ALL SELECT ?7, ?`, `SELECT $6 AS s UNION ALL SELECT $7, $8`},
		{`SELECT '?', "a?b", 'it''s ?' FROM t WHERE x = ?`, `SELECT '?', "a?b", 'it''s ?' FROM t WHERE x = $1`},
		{"SELECT 1 -- why?\nWHERE x = ?", "SELECT 1 -- why?\nWHERE x = $1"},
		{`SELECT 'unterminated ?`, `SELECT 'unterminated ?`},
	} {
		if got := rebindDollar(c.in); got != c.want {
			t.Errorf("rebindDollar(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestStoreShipsBothDialects: the store's own migrations exist for every
// engine under the same names.
func TestStoreShipsBothDialects(t *testing.T) {
	t.Parallel()
	if err := ownMigrations.CheckDialects(); err != nil {
		t.Fatal(err)
	}
}
