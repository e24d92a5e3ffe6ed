package approvals

import (
	"testing"

	"github.com/tollgatehq/tollgate/ledger/store/storetest"
)

// RetryDelay is Service.retryDelay, for the tests of package approvals_test.
var RetryDelay = (*Service).retryDelay

// TestMain stops the PostgreSQL cluster the suite's postgres subtests share.
func TestMain(m *testing.M) { storetest.Main(m) }
