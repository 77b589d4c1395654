package outbox

import (
	"context"
	"errors"
	"sync"
	"time"
)

// flights tracks, within one relay, the groups of a sharding key's rows
// being sent, and the claims not yet split into groups. A job runs two
// claim loops, and concurrent claims interleave their rows (each skips
// what the other has locked), so two groups often split a key's backlog:
// a row whose earlier row the other group held was handed back for a
// second later, past the run's start, and so was every later row of the
// key: a backlog of one key sent one batch per run. With flights, a row
// blocked by an earlier row waits for the sibling group that has not sent
// it yet (or, while that row is due and unclaimed, for this relay's
// dispatch claims under way) and checks again. A row whose earlier row
// another process is sending polls for it instead (see Relay.await).
//
// A row waits only for a group that is at an earlier row than itself, so
// the group at a key's earliest row never waits for another, and waits
// cannot go round in a circle.
type flights struct {
	mu     sync.Mutex
	claims int           // dispatch claims taken and not yet registered
	idle   chan struct{} // closed when claims falls to 0
	keys   map[string]*keyFlights
}

// keyFlights are one sharding key's groups in flight.
type keyFlights struct {
	groups []*flight
	moved  chan struct{} // closed (and replaced) when one of them moves on
	moves  uint64
}

type flight struct {
	key string
	at  int64 // the id of the row the group sends next
}

// claimStarted counts a claim about to be taken; register with
// claimEnded ends it.
func (f *flights) claimStarted() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.claims == 0 {
		f.idle = make(chan struct{})
	}
	f.claims++
}

// register records groups as in flight when ordered (it returns nil for
// an unordered row's group) and, with claimEnded, ends the claim they
// came from.
func (f *flights) register(groups [][]*Row, ordered, claimEnded bool) []*flight {
	f.mu.Lock()
	defer f.mu.Unlock()
	var fls []*flight
	if ordered {
		fls = make([]*flight, len(groups))
		for i, g := range groups {
			key := g[0].ShardingKey
			if key == "" {
				continue
			}
			if f.keys == nil {
				f.keys = map[string]*keyFlights{}
			}
			k := f.keys[key]
			if k == nil {
				k = &keyFlights{moved: make(chan struct{})}
				f.keys[key] = k
			}
			fls[i] = &flight{key: key, at: g[0].ID}
			k.groups = append(k.groups, fls[i])
		}
	}
	if claimEnded {
		if f.claims--; f.claims == 0 {
			close(f.idle)
		}
	}
	return fls
}

// wake wakes the waiters of k's key; f.mu is held.
func (k *keyFlights) wake() {
	k.moves++
	close(k.moved)
	k.moved = make(chan struct{})
}

// advance records that fl's group is at row id now.
func (f *flights) advance(fl *flight, id int64) {
	if fl == nil || fl.at == id {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	fl.at = id
	f.keys[fl.key].wake()
}

// land records fl's group as done.
func (f *flights) land(fl *flight) {
	if fl == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k := f.keys[fl.key]
	for i, o := range k.groups {
		if o == fl {
			k.groups = append(k.groups[:i], k.groups[i+1:]...)
			break
		}
	}
	k.wake()
	if len(k.groups) == 0 {
		delete(f.keys, fl.key)
	}
}

// mark returns a mark to pass to wait: read before the database is asked
// whether a row is blocked, it makes a move in between not missed.
func (f *flights) mark(fl *flight) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.keys[fl.key].moves
}

var errClaimRanOut = errors.New("outbox: the claim ran out waiting for an earlier row of its key")

// wait waits, for fl's group, whose row found at before it (inFlight or
// claimable), until the row should ask the database again, and reports
// whether it should. For inFlight it waits, first, for as long as another
// group of the key is at an earlier row (in memory: each of that group's
// sends wakes it, none makes it ask); once none is, it asks again at once
// if a group of the key moved since mark, and else naps (another process
// sends the row). For claimable it waits for this relay's claims under
// way, if any. Naps and claim waits take at most budget, and spent is the
// time they took. It waits at most limit in all (the claim's lease), and
// ends with ctx.
func (f *flights) wait(ctx context.Context, fl *flight, mark uint64, at earlier, nap, budget, limit time.Duration) (
	again bool, spent time.Duration, err error) {
	if limit <= 0 {
		return false, 0, errClaimRanOut
	}
	expired := time.NewTimer(limit)
	defer expired.Stop()
	for {
		f.mu.Lock()
		k := f.keys[fl.key]
		var sibling, idle chan struct{}
		if at == inFlight {
			for _, o := range k.groups {
				if o.at < fl.at {
					sibling = k.moved
					break
				}
			}
		}
		switch {
		case sibling != nil:
		case k.moves != mark:
			f.mu.Unlock()
			return true, spent, nil
		case budget <= spent, at == claimable && f.claims == 0:
			f.mu.Unlock()
			return false, spent, nil
		case at == claimable:
			idle = f.idle
		}
		f.mu.Unlock()
		if sibling != nil {
			select {
			case <-sibling:
				continue
			case <-ctx.Done():
				return false, spent, ctx.Err()
			case <-expired.C:
				return false, spent, errClaimRanOut
			}
		}
		d := budget - spent
		if idle == nil {
			d = min(d, nap)
		}
		t := time.NewTimer(d)
		start := time.Now()
		select {
		case <-idle:
		case <-t.C:
		case <-ctx.Done():
			err = ctx.Err()
		case <-expired.C:
			err = errClaimRanOut
		}
		t.Stop()
		return err == nil, spent + time.Since(start), err
	}
}
