#!/usr/bin/env bash
# tokenize.sh: `hllm tokenize` end to end: encode/decode JSON lines, NUL and Unicode texts,
# per-line errors that do not stop the stream, usage errors, and a load error naming the problem.
# Usage: bash tokenize.sh /path/to/hllm /path/to/tests
set -u
HLLM=$1
TESTS=$2
LLAMA=$TESTS/data/tokenizers/llama2
QWEN=$TESTS/data/tokenizers/qwen3
fail=0
check() { # name, expected, actual
    if [[ "$2" == "$3" ]]; then echo "ok   $1"; else echo "FAIL $1"; echo "  want: $2"; echo "  got:  $3"; fail=1; fi
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --help exits 0 and documents the modes
"$HLLM" tokenize --help > "$tmp/help"; check "help exit" 0 $?
grep -q -- "--decode" "$tmp/help"; check "help mentions --decode" 0 $?

# encode: ids from the fixture vectors (first line of each file, computed by HF tokenizers)
out=$(printf '%s\n' '{"text": "The Hitchhiker'"'"'s Guide to the Galaxy"}' | "$HLLM" tokenize --tokenizer "$LLAMA")
check "llama encode" '{"text":"The Hitchhiker'"'"'s Guide to the Galaxy","ids":[450,379,2335,29882,5603,29915,29879,16886,304,278,5208,26825]}' "$out"

# encode with add_special: llama's tokenizer_config says add_bos_token
out=$(printf '{"text": "Hi"}\n' | "$HLLM" tokenize --tokenizer "$LLAMA" --add-special)
[[ "$out" == '{"text":"Hi","ids":[1,'* ]]; check "llama add_special starts with <s>" 0 $?

# a NUL byte inside the text survives the round trip
enc=$(printf '{"text": "a\\u0000b"}\n' | "$HLLM" tokenize --tokenizer "$QWEN")
ids=$(printf '%s' "$enc" | sed 's/.*"ids":\(\[[^]]*\]\).*/\1/')
dec=$(printf '{"ids": %s}\n' "$ids" | "$HLLM" tokenize --tokenizer "$QWEN" --decode)
check "NUL round trip" "{\"ids\":$ids,\"text\":\"a\\u0000b\"}" "$dec"

# decode skip-special
out=$(printf '{"ids": [151644, 9707, 151645]}\n' | "$HLLM" tokenize --tokenizer "$QWEN" --decode --skip-special)
check "qwen decode skip-special" '{"ids":[151644,9707,151645],"text":"Hello"}' "$out"
out=$(printf '{"ids": [151644, 9707, 151645]}\n' | "$HLLM" tokenize --tokenizer "$QWEN" --decode)
check "qwen decode keep special" '{"ids":[151644,9707,151645],"text":"<|im_start|>Hello<|im_end|>"}' "$out"

# a bad line gets an error line; the next line is still processed; exit code 1
printf '{"text": "ok"}\nnot json\n{"ids": [1]}\n{"text": "again"}\n' | "$HLLM" tokenize --tokenizer "$QWEN" > "$tmp/out"
rc=$?
check "bad lines exit code" 1 $rc
check "one output line per input line" 4 "$(wc -l < "$tmp/out")"
check "line 2 is an error" 1 "$(sed -n 2p "$tmp/out" | grep -c '^{"error":')"
check "line 3 is an error" 1 "$(sed -n 3p "$tmp/out" | grep -c '^{"error":')"
check "line 4 processed" 1 "$(sed -n 4p "$tmp/out" | grep -c '"ids":\[')"

# decode rejects negative ids on that line only
out=$(printf '{"ids": [-1]}\n' | "$HLLM" tokenize --tokenizer "$QWEN" --decode)
[[ "$out" == '{"error":'* ]]; check "negative id is a line error" 0 $?

# usage errors exit 2; a missing tokenizer exits 1 with a message
"$HLLM" tokenize < /dev/null 2> /dev/null; check "no --tokenizer" 2 $?
"$HLLM" tokenize --tokenizer "$QWEN" --bogus < /dev/null 2> /dev/null; check "unknown option" 2 $?
"$HLLM" tokenize --tokenizer "$tmp/nowhere" < /dev/null 2> "$tmp/err"; check "missing dir exit" 1 $?
grep -q "tokenizer.json" "$tmp/err"; check "missing dir message" 0 $?
mkdir -p "$tmp/bad" && printf '{"model": {"type": "WordLevel", "vocab": {}}}' > "$tmp/bad/tokenizer.json"
"$HLLM" tokenize --tokenizer "$tmp/bad" < /dev/null 2> "$tmp/err"; check "unsupported exit" 1 $?
grep -q "WordLevel" "$tmp/err"; check "unsupported names the component" 0 $?

# --bench prints one JSON line of timings
out=$(printf '{"text": "Dune"}\n{"text": "Emma"}\n' | "$HLLM" tokenize --tokenizer "$QWEN" --bench 3)
[[ "$out" == '{"load_ms":'*'"n_texts":2,'* ]]; check "bench output" 0 $?

exit $fail
