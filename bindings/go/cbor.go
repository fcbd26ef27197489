package gatos

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"sort"
	"strings"
	"unicode/utf8"
)

// The canonical data model (SPEC §3) is JSON without floats: nil, bool, integers in
// [-2^64, 2^64-1], UTF-8 strings, lists and string-keyed maps. Values are first
// normalized to nil/bool/string/json.Number/[]any/map[string]any (anything else is
// taken through encoding/json, so structs with json tags work), then encoded.

const maxDepth = 64

var (
	minInt = new(big.Int).Neg(new(big.Int).Lsh(big.NewInt(1), 64))                // -2^64
	maxInt = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 64), big.NewInt(1)) // 2^64-1
)

// Normalize returns v in the canonical data model, or an error with code
// BAD_ENCODING naming the first value outside it (a float, an integer out of range,
// text that is not UTF-8, a map key that is not a string, nesting deeper than 64).
//
// Integers come back as json.Number. Values of other types (structs, typed maps and
// slices) are converted through encoding/json first; note that encoding/json writes a
// float64 with no fraction as an integer, so pass integers as integer types.
func Normalize(v any) (any, error) {
	return normalize(v, "$", 0)
}

func badEncoding(path, format string, args ...any) error {
	return &Error{Code: "BAD_ENCODING", Reason: path + ": " + fmt.Sprintf(format, args...)}
}

func normalize(v any, path string, depth int) (any, error) {
	if depth > maxDepth {
		return nil, badEncoding(path, "nested deeper than %d levels", maxDepth)
	}
	switch x := v.(type) {
	case nil, bool:
		return x, nil
	case string:
		if !utf8.ValidString(x) {
			return nil, badEncoding(path, "text is not valid UTF-8")
		}
		return x, nil
	case json.Number:
		return checkNumber(x, path)
	case int, int8, int16, int32, int64:
		return json.Number(fmt.Sprint(x)), nil
	case uint, uint8, uint16, uint32, uint64, uintptr:
		return json.Number(fmt.Sprint(x)), nil
	case *big.Int:
		if x == nil {
			return nil, nil
		}
		return checkNumber(json.Number(x.String()), path)
	case float32, float64:
		return nil, badEncoding(path, "floats are not allowed in signed data (%v); use integers or Q32.32 fixed point", x)
	case []any:
		out := make([]any, len(x))
		for i, item := range x {
			n, err := normalize(item, fmt.Sprintf("%s[%d]", path, i), depth+1)
			if err != nil {
				return nil, err
			}
			out[i] = n
		}
		return out, nil
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, item := range x {
			if !utf8.ValidString(k) {
				return nil, badEncoding(path, "map key %q is not valid UTF-8", k)
			}
			n, err := normalize(item, path+"."+k, depth+1)
			if err != nil {
				return nil, err
			}
			out[k] = n
		}
		return out, nil
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Float32 || rv.Kind() == reflect.Float64 {
		return nil, badEncoding(path, "floats are not allowed in signed data (%v)", v)
	}
	data, err := json.Marshal(v)
	if err != nil {
		return nil, badEncoding(path, "%T cannot be encoded: %v", v, err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var generic any
	if err := dec.Decode(&generic); err != nil {
		return nil, badEncoding(path, "%T cannot be encoded: %v", v, err)
	}
	return normalize(generic, path, depth)
}

func checkNumber(n json.Number, path string) (any, error) {
	s := string(n)
	if strings.ContainsAny(s, ".eE") || s == "" {
		return nil, badEncoding(path, "floats are not allowed in signed data (%s); use integers or Q32.32 fixed point", s)
	}
	i, ok := new(big.Int).SetString(s, 10)
	if !ok {
		return nil, badEncoding(path, "%q is not an integer", s)
	}
	if i.Cmp(minInt) < 0 || i.Cmp(maxInt) > 0 {
		return nil, badEncoding(path, "integer %s is outside the 64-bit range of DAG-CBOR", s)
	}
	return json.Number(i.String()), nil
}

// EncodeCanonical returns the canonical DAG-CBOR bytes of v: definite lengths,
// shortest integer forms, map keys sorted by their encoded bytes (shorter first).
func EncodeCanonical(v any) ([]byte, error) {
	n, err := Normalize(v)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	encodeValue(&buf, n)
	return buf.Bytes(), nil
}

func writeHead(buf *bytes.Buffer, major byte, n uint64) {
	m := major << 5
	switch {
	case n < 24:
		buf.WriteByte(m | byte(n))
	case n <= math.MaxUint8:
		buf.Write([]byte{m | 24, byte(n)})
	case n <= math.MaxUint16:
		buf.Write([]byte{m | 25, byte(n >> 8), byte(n)})
	case n <= math.MaxUint32:
		buf.Write([]byte{m | 26, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
	default:
		buf.WriteByte(m | 27)
		for s := 56; s >= 0; s -= 8 {
			buf.WriteByte(byte(n >> uint(s)))
		}
	}
}

// encodeValue encodes a normalized value.
func encodeValue(buf *bytes.Buffer, v any) {
	switch x := v.(type) {
	case nil:
		buf.WriteByte(0xf6)
	case bool:
		if x {
			buf.WriteByte(0xf5)
		} else {
			buf.WriteByte(0xf4)
		}
	case json.Number:
		i, _ := new(big.Int).SetString(string(x), 10)
		if i.Sign() >= 0 {
			writeHead(buf, 0, i.Uint64())
		} else {
			writeHead(buf, 1, new(big.Int).Sub(new(big.Int).Neg(i), big.NewInt(1)).Uint64())
		}
	case string:
		writeHead(buf, 3, uint64(len(x)))
		buf.WriteString(x)
	case []any:
		writeHead(buf, 4, uint64(len(x)))
		for _, item := range x {
			encodeValue(buf, item)
		}
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		// Encoded text keys sort by length first, then bytewise.
		sort.Slice(keys, func(a, b int) bool {
			if len(keys[a]) != len(keys[b]) {
				return len(keys[a]) < len(keys[b])
			}
			return keys[a] < keys[b]
		})
		writeHead(buf, 5, uint64(len(x)))
		for _, k := range keys {
			writeHead(buf, 3, uint64(len(k)))
			buf.WriteString(k)
			encodeValue(buf, x[k])
		}
	default:
		panic(fmt.Sprintf("gatos: encodeValue got a non-normalized %T", v))
	}
}
