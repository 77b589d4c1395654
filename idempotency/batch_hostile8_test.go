package idempotency_test

import (
	"context"
	"errors"
	"testing"

	"github.com/seed157d4c4d/reliablemq/idempotency"
)

// TestBatchClaimsAreEachTheirOwn guards the claims of one ClaimBatch
// sharing one array: each claim keeps its own key, token, outcome and
// attempt whatever is done to the others (a caller that edits a claim's
// exported fields, keeps a claim past later batches, or gives a key twice
// or an empty key among others); completing or releasing one acts on its
// own key and token only.
func TestBatchClaimsAreEachTheirOwn(t *testing.T) {
	t.Parallel()
	b := backends()[len(backends())-1] // miniredis
	g := newGuard(t, b.store(t))
	ctx := context.Background()
	claims, errs := g.ClaimBatch(ctx, []string{"x1", "", "x2", "x1", "x3"})
	if !errors.Is(errs[1], idempotency.ErrEmptyKey) || claims[1] != nil {
		t.Fatalf("empty key: %v, %v", claims[1], errs[1])
	}
	for _, i := range []int{0, 2, 3, 4} {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
	}
	if claims[0].Outcome != idempotency.Acquired || claims[3].Outcome != idempotency.Busy {
		t.Fatalf("a key twice: %v then %v, want acquired then busy", claims[0].Outcome, claims[3].Outcome)
	}
	tokens := map[string]bool{}
	for _, i := range []int{0, 2, 3, 4} {
		tokens[claims[i].Token()] = true
	}
	if len(tokens) != 4 {
		t.Fatalf("%d distinct tokens for 4 claims", len(tokens))
	}
	kept := claims[2]
	keptToken := kept.Token()
	claims[0].Outcome, claims[0].Attempt = idempotency.Done, 99 // the caller's own edit
	if claims[4].Outcome != idempotency.Acquired || claims[4].Attempt != 1 || kept.Outcome != idempotency.Acquired {
		t.Fatalf("an edit of one claim changed another: %+v %+v", claims[4], kept)
	}
	// Later batches do not touch the kept claim.
	for r := range 3 {
		y := string(rune('a' + r))
		more, errs := g.ClaimBatch(ctx, []string{"y1" + y, "y2" + y, "x2"})
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if more[2].Outcome != idempotency.Busy {
			t.Fatalf("x2 held by the kept claim: %v", more[2].Outcome)
		}
		if errs := g.CompleteBatch(ctx, more[:2]); errs[0] != nil || errs[1] != nil {
			t.Fatal(errs)
		}
	}
	if kept.Token() != keptToken || kept.Outcome != idempotency.Acquired {
		t.Fatalf("kept claim changed: %+v", kept)
	}
	// The busy second x1 completes nothing; x1's own claim still does.
	cerrs := g.CompleteBatch(ctx, []*idempotency.Claim{claims[3], kept, claims[0], claims[4]})
	if !errors.Is(cerrs[0], idempotency.ErrLostClaim) {
		t.Errorf("the busy claim of a repeated key completed: %v", cerrs[0])
	}
	for i, err := range cerrs[1:] {
		if err != nil {
			t.Errorf("claim %d: %v", i+1, err)
		}
	}
	again, errs := g.ClaimBatch(ctx, []string{"x1", "x2", "x3"})
	for i := range again {
		if errs[i] != nil || again[i].Outcome != idempotency.Done {
			t.Errorf("key %d after completion: %v, %v", i, again[i], errs[i])
		}
	}
}
