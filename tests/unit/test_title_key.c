/* The keys of proto/title-table.md: ad hash, title seed, hex round trip, and the package digest
 * (stable across loads and copies; changes when one byte of a weight, the manifest or the
 * centroids changes). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "creator/creator.h"
#include "creator/title_key.h"
#include "testutil.h"

static int sh(const char *cmd) { return system(cmd); }

static int load_digest(hc_backend *be, const char *pkg, uint64_t *d) {
    hc_errbuf eb = {{0}};
    hc_creator_params p = hc_creator_default_params();
    p.load_creative = 0;
    p.allow_outside_paths = 1;
    hc_creator *c = NULL;
    int rc = hc_creator_load(&c, be, pkg, &p, &eb);
    if (rc) fprintf(stderr, "load %s: %s\n", pkg, eb.msg);
    else *d = c->digest;
    hc_creator_free(c);
    return rc;
}

/* Flips one byte at offset off of file f (a copy of the package). */
static void flip_byte(const char *f, long off) {
    FILE *fp = fopen(f, "r+b");
    CHECK(fp != NULL);
    if (!fp) return;
    if (off < 0) { fseek(fp, off, SEEK_END); } else fseek(fp, off, SEEK_SET);
    int ch = fgetc(fp);
    fseek(fp, -1, SEEK_CUR);
    fputc(ch ^ 1, fp);
    fclose(fp);
}

int main(int argc, char **argv) {
    const char *tests = argc > 1 ? argv[1] : "tests";
    /* ad hash: the separator keeps (title, desc) pairs apart; NULL desc == empty desc */
    CHECK(hc_ad_hash("ab", 2, "c", 1) != hc_ad_hash("a", 1, "bc", 2));
    CHECK(hc_ad_hash("ab", 2, NULL, 0) == hc_ad_hash("ab", 2, "", 0));
    CHECK(hc_ad_hash("ab", 2, NULL, 0) != hc_ad_hash("ab", 2, "x", 1));
    CHECK(hc_ad_hash("", 0, NULL, 0) != hc_ad_hash("", 0, "\0", 1));
    /* seeds: every input matters */
    uint64_t a = hc_ad_hash("t", 1, NULL, 0);
    CHECK(hc_title_seed(1, 0, a) != hc_title_seed(2, 0, a));
    CHECK(hc_title_seed(1, 0, a) != hc_title_seed(1, 1, a));
    CHECK(hc_title_seed(1, 0, a) != hc_title_seed(1, 0, a + 1));
    CHECK(hc_title_seed(1, 3, a) == hc_title_seed(1, 3, a));
    /* hex */
    char hex[17];
    uint64_t back = 0;
    hc_hash_hex(0x0123456789abcdefULL, hex);
    CHECK(strcmp(hex, "0123456789abcdef") == 0);
    CHECK(hc_hash_parse(hex, &back) == 0 && back == 0x0123456789abcdefULL);
    CHECK(hc_hash_parse("0123456789ABCDEF", &back) == 0 && back == 0x0123456789abcdefULL);
    CHECK(hc_hash_parse("0123456789abcde", &back) == -1);
    CHECK(hc_hash_parse("0123456789abcdefa", &back) == -1);
    CHECK(hc_hash_parse("0123456789abcdeg", &back) == -1);

    /* package digest */
    hc_backend *be = NULL;
    CHECK_OK(hc_backend_cpu_create(&be, 1));
    char pkg[1024], tmp[] = "/tmp/hc_title_key_XXXXXX", cmd[4096], f[2048];
    snprintf(pkg, sizeof pkg, "%s/data/creator/tiny", tests);
    CHECK(mkdtemp(tmp) != NULL);
    uint64_t d0 = 0, d1 = 0, d2 = 0, d3 = 0, d4 = 0;
    CHECK_OK(load_digest(be, pkg, &d0));
    CHECK_OK(load_digest(be, pkg, &d1));
    CHECK(d0 == d1 && d0 != 0);
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s/p'", pkg, tmp);
    CHECK(sh(cmd) == 0);
    snprintf(pkg, sizeof pkg, "%s/p", tmp);
    CHECK_OK(load_digest(be, pkg, &d2));
    CHECKF(d2 == d0, "a copied package has the same digest");
    snprintf(f, sizeof f, "%s/p/model.safetensors", tmp);
    flip_byte(f, -1); /* the last byte of the last tensor */
    CHECK_OK(load_digest(be, pkg, &d3));
    CHECKF(d3 != d0, "one weight byte changes the digest");
    flip_byte(f, -1);
    snprintf(f, sizeof f, "%s/p/clusters.safetensors", tmp);
    flip_byte(f, -1);
    CHECK_OK(load_digest(be, pkg, &d4));
    CHECKF(d4 != d0 && d4 != d3, "one centroid byte changes the digest");
    flip_byte(f, -1);
    snprintf(f, sizeof f, "%s/p/creator.json", tmp);
    FILE *fp = fopen(f, "a");
    CHECK(fp != NULL);
    if (fp) { fputs("\n", fp); fclose(fp); }
    CHECK_OK(load_digest(be, pkg, &d4));
    CHECKF(d4 != d0, "the manifest's bytes are part of the digest");
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    CHECK(sh(cmd) == 0);
    hc_backend_free(be);
    return hc_test_finish("test_title_key");
}
