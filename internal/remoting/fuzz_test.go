package remoting

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// seedBodies adds the stored-message bodies and frames of the transcripts
// as fuzz seeds.
func seedBodies(f *testing.F, wantFrames bool) {
	files, _ := filepath.Glob("../../../shared/rocketmq/transcripts/*.jsonl")
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			continue
		}
		for _, line := range bytes.Split(data, []byte("\n")) {
			var fr struct {
				Code      *int              `json:"code"`
				Opaque    int32             `json:"opaque"`
				Flag      int               `json:"flag"`
				Remark    string            `json:"remark"`
				ExtFields map[string]string `json:"extFields"`
				Body      string            `json:"body"`
				BodyEnc   string            `json:"bodyEnc"`
			}
			if json.Unmarshal(line, &fr) != nil || fr.Code == nil {
				continue
			}
			body := []byte(fr.Body)
			if fr.BodyEnc == "base64" {
				body, _ = base64.StdEncoding.DecodeString(fr.Body)
				if !wantFrames {
					f.Add(body)
				}
			}
			if wantFrames {
				c := &Command{Code: *fr.Code, Opaque: fr.Opaque, Flag: fr.Flag, Remark: fr.Remark, ExtFields: fr.ExtFields, Body: body}
				if enc, err := c.Encode(); err == nil {
					f.Add(enc[4:])
				}
			}
		}
	}
}

func FuzzDecodeFrame(f *testing.F) {
	seedBodies(f, true)
	f.Add([]byte{0, 0, 0, 2, '{', '}'})
	f.Fuzz(func(t *testing.T, frame []byte) {
		c, err := DecodeFrame(frame)
		if err != nil {
			return
		}
		enc, err := c.Encode()
		if err != nil {
			return // e.g. a decoded header re-encodes larger than the limit
		}
		c2, err := DecodeFrame(enc[4:])
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip:\n%+v\n%+v", c, c2)
		}
	})
}

func FuzzStoredMessages(f *testing.F) {
	seedBodies(f, false)
	f.Fuzz(func(t *testing.T, body []byte) {
		msgs, err := DecodeStoredMessages(body)
		if err != nil {
			return
		}
		var enc []byte
		for _, m := range msgs {
			if m.Validate() != nil {
				return
			}
			enc = m.AppendEncoded(enc)
		}
		again, err := DecodeStoredMessages(enc)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if !reflect.DeepEqual(msgs, again) {
			t.Fatalf("round trip differs")
		}
	})
}

func FuzzProperties(f *testing.F) {
	f.Add("KEYS\x01a b\x02UNIQ_KEY\x01C0\x02TAGS\x01TagA\x02")
	f.Add("KEYS\x01key-c-0\x02CLUSTER\x01DefaultCluster\x02TAGS\x01TagA")
	f.Add("\x01\x02\x01")
	f.Fuzz(func(t *testing.T, s string) {
		props := DecodeProperties(s)
		again := DecodeProperties(EncodeProperties(props))
		if !reflect.DeepEqual(props, again) {
			t.Fatalf("round trip: %q -> %v -> %v", s, props, again)
		}
	})
}

func FuzzBatch(f *testing.F) {
	f.Add(EncodeBatch([]BatchItem{{Body: []byte("a"), Properties: "KEYS\x01k\x02"}, {Flag: 3, Body: nil}}))
	f.Fuzz(func(t *testing.T, body []byte) {
		items, err := DecodeBatch(body)
		if err != nil {
			return
		}
		again, err := DecodeBatch(EncodeBatch(items))
		if err != nil || !reflect.DeepEqual(items, again) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// TestSignMatchesTheBrokersRule pins the ACL signature: the base64
// HMAC-SHA1 of every header field's value but Signature's, in key order
// (AccessKey and SecurityToken included), then the body. A broker with ACL
// on accepted requests signed so (the real-broker ACL test).
func TestSignMatchesTheBrokersRule(t *testing.T) {
	req := &Command{Code: ReqSendMessage, Body: []byte("body"), ExtFields: map[string]string{"topic": "T", "queueId": "0"}}
	Sign(req, "ak", "sk", "tok")
	mac := hmac.New(sha1.New, []byte("sk"))
	mac.Write([]byte("ak" + "tok" + "0" + "T" + "body")) // AccessKey, SecurityToken, queueId, topic
	if want := base64.StdEncoding.EncodeToString(mac.Sum(nil)); req.ExtFields["Signature"] != want ||
		req.ExtFields["AccessKey"] != "ak" || req.ExtFields["SecurityToken"] != "tok" {
		t.Fatalf("signed fields %v, want Signature %s", req.ExtFields, want)
	}
	before := req.ExtFields["Signature"]
	Sign(req, "ak", "sk", "tok") // signing again ignores the old signature
	if req.ExtFields["Signature"] != before {
		t.Fatal("re-signing changed the signature")
	}
	plain := &Command{Code: ReqSendMessage}
	Sign(plain, "", "", "")
	if len(plain.ExtFields) != 0 {
		t.Fatalf("signing without credentials added %v", plain.ExtFields)
	}
}
