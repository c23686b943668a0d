/* config.h: hllm-creatord settings: defaults, `key = value` config file, long options. */
#ifndef HCD_CONFIG_H
#define HCD_CONFIG_H

#define HCD_MAX_TABLES 32 /* title tables (--title-table) */
#define HCD_KEY_MIN 16    /* API keys: 16 to 256 visible ASCII characters (server/auth.c) */
#define HCD_KEY_MAX 256

typedef struct hcd_config {
    char model[4096];
    char listen[256];
    int port;
    int threads;
    char backend[16];      /* auto | cpu | cuda */
    char compute[8];       /* f32 | bf16: GEMM activations (engine/backend/backend.h) */
    int max_queued;
    long max_body_bytes;
    int max_history_titles;
    int max_title_bytes;
    int max_connections;
    int drain_timeout_s;
    long request_timeout_ms; /* default deadline of a request (its deadline_ms wins); 0: none */
    int max_batch;           /* items of one /v1/titles:batch; past it 400 */
    long user_cache_bytes;  /* the user cache's bound (0: off) */
    long item_cache_bytes;  /* the engine's item-embedding cache bound (0: off) */
    long title_cache_bytes; /* the title cache's bound (0: off, and no single flight) */
    char title_tables[HCD_MAX_TABLES][4096]; /* pre-generated title tables (proto/title-table.md) */
    int n_title_tables;
    double prune_threshold; /* match probability below which a title is not generated (the
                               original title answers, "pruned": true); < 0: off (default) */
    char api_key[HCD_KEY_MAX + 1];   /* --api-key: one accepted Bearer key ("" none) */
    char api_key_file[4096];         /* --api-key-file: keys one per line (server/auth.c) */
    char tls_cert[4096], tls_key[4096]; /* --tls-cert / --tls-key: PEM files; both or neither */
    int log_level;         /* 0 error, 1 warn, 2 info, 3 debug */
    int access_log;        /* 1: one "access" line per answered request, whatever log_level */
    int check_only;        /* -t */
} hcd_config;

void hcd_config_defaults(hcd_config *c);
/* Parses argv (a --config FILE is read first, options override it). Returns 0 to run, 1 when
 * --help/--version was printed (exit 0), -1 on a usage error (message printed; exit 2). */
int hcd_config_parse(hcd_config *c, int argc, char **argv);
int hcd_log_level_parse(const char *s);

#endif
