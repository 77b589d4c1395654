package bench

// pairs lists every pair of a run, the concurrent ones on w goroutines.
func (e *env) pairs(w int) []pair {
	ps := []pair{e.sendPair(1), e.sendPair(w)}
	for _, guard := range []string{"none", "redis", "mysql"} {
		ps = append(ps, e.consumePair(guard))
	}
	ps = append(ps, e.mysqlGuardPair(w), e.txGuardPair(w), e.transactPair(w), e.drainPair(w),
		e.redisGuardPair(w), e.contextPair(w))
	if e.broker == nil {
		ps = append(ps, e.brokerPair(w))
	}
	return ps
}

// sweepPairs lists the pairs whose concurrency the bench sets, on w
// goroutines, under names that do not change with w. The consume pairs
// are left out: a push consumer runs on its own pool.
func (e *env) sweepPairs(w int) []pair {
	send := e.sendPair(w)
	send.name = "producer send"
	ps := []pair{send, e.mysqlGuardPair(w), e.txGuardPair(w), e.transactPair(w), e.drainPair(w),
		e.redisGuardPair(w), e.contextPair(w)}
	if e.broker == nil {
		ps = append(ps, e.brokerPair(w))
	}
	return ps
}
