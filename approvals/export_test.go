package approvals

// RetryDelay is Service.retryDelay, for the tests of package approvals_test.
var RetryDelay = (*Service).retryDelay
