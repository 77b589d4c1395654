package producer

// FoundCheckQueue reports whether p found the official client's check-back
// queue, which Close relies on to shut the client down race-free.
func FoundCheckQueue(p *Transactional) bool { return p.checks != nil }
