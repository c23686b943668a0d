/* test_train_progress.c: the metrics JSON-lines file (content, append on resume, null for
 * non-finite, bad names refused, ENOSPC and EISDIR reported) and the progress line format. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "progress.h"
#include "testutil.h"

static void test_metrics(void) {
    char path[] = "/tmp/hc_metrics_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    close(fd);
    const char *names[2] = {"creative", "align"};
    hc_progress p;
    hc_errbuf eb = {{0}};
    for (int run = 0; run < 2; run++) { /* the second open appends, as a resumed run does */
        CHECK_OK(hc_progress_open(&p, path, 4, &eb));
        p.tty = 0;
        for (int s = 1; s <= 2; s++) {
            int64_t step = run * 2 + s;
            double terms[2] = {1.0 / (double)step, step == 3 ? NAN : 0.25 * (double)step};
            CHECK_OK(hc_progress_step(&p, step, 1e-5 * (double)step, terms[0] + 1, 2, names,
                                      terms, 2.5, 1000.0 + (double)step, 1.0, s, &eb));
        }
        const char *bad[1] = {"Bad\"name"};
        double t = 0;
        CHECK(hc_progress_step(&p, 9, 0, 0, 1, bad, &t, 0, 0, 0, 1, &eb) == HC_ERR_INVAL);
        CHECK_OK(hc_progress_close(&p, &eb));
    }
    char *text = hc_test_read_file(path, NULL);
    CHECK(text != NULL);
    if (text) {
        int lines = 0;
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
            lines++;
            long long step = 0;
            double lr = 0, loss = 0, lc = 0;
            CHECK(sscanf(line, "{\"step\":%lld,\"lr\":%lf,\"loss\":%lf,\"loss_creative\":%lf", &step,
                         &lr, &loss, &lc) == 4);
            CHECK(step == lines);
            CHECK(fabs(lr - 1e-5 * (double)step) < 1e-14);
            CHECK(fabs(lc - 1.0 / (double)step) < 1e-8 && fabs(loss - lc - 1) < 1e-8);
            CHECK(strstr(line, "\"grad_norm\":2.5,") != NULL);
            CHECK(strstr(line, "\"tokens_per_s\":") != NULL && line[strlen(line) - 1] == '}');
            if (step == 3) CHECK(strstr(line, "\"loss_align\":null") != NULL);
            else CHECK(strstr(line, "\"loss_align\":null") == NULL);
        }
        CHECK(lines == 4);
        free(text);
    }
    unlink(path);
    /* a directory is not a metrics file; ENOSPC surfaces at the flush */
    CHECK(hc_progress_open(&p, "/tmp", 1, &eb) == HC_ERR_IO && strstr(eb.msg, "/tmp"));
    if (access("/dev/full", W_OK) == 0) {
        CHECK_OK(hc_progress_open(&p, "/dev/full", 1, &eb));
        p.tty = 0;
        double t = 1;
        CHECK(hc_progress_step(&p, 1, 0, 1, 1, names, &t, 0, 0, 0, 1, &eb) == HC_ERR_IO);
        CHECK(strstr(eb.msg, "write failed") != NULL);
        hc_progress_close(&p, NULL);
    }
}

static void test_format(void) {
    const char *names[2] = {"creative", "cls"};
    double terms[2] = {0.5, 0.125};
    char b[256];
    int n = hc_progress_format(b, sizeof b, 7, 100, 0.625, 2, names, terms, 1234.4, 192);
    CHECK(n == (int)strlen(b));
    CHECKF(strcmp(b, "step 7/100  loss 0.625 (creative 0.5 cls 0.125)  1234 tok/s  ETA 3m12s") == 0,
           "%s", b);
    hc_progress_format(b, sizeof b, 1, 2, 1, 0, NULL, NULL, 5, 7300);
    CHECKF(strstr(b, "ETA 2h01m") && !strchr(b, '('), "%s", b);
    hc_progress_format(b, sizeof b, 1, 2, 1, 0, NULL, NULL, 5, NAN);
    CHECKF(strstr(b, "ETA ?"), "%s", b);
    char small[8];
    n = hc_progress_format(small, sizeof small, 7, 100, 0.625, 2, names, terms, 1, 1);
    CHECK(n == 7 && strlen(small) == 7);
}

/* hc_metrics_cut: the resume cut. */
static void put_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static int file_is(const char *path, const char *want) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return !strcmp(buf, want);
}

static void test_cut(void) {
    char path[] = "/tmp/hc_metrics_cut_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    close(fd);
    hc_errbuf eb = {{0}};
    int64_t cut = -1;
    const char *l1 = "{\"step\":1,\"loss\":3}\n", *l2 = "{\"step\":2,\"loss\":2}\n",
               *l3 = "{\"step\":3,\"loss\":1}\n", *torn = "{\"step\":4,\"lo";
    char all[512], want[512];
    /* lines beyond the checkpoint and a torn last line go */
    snprintf(all, sizeof all, "%s%s%s%s", l1, l2, l3, torn);
    put_file(path, all);
    CHECK(hc_metrics_cut(path, 2, &cut, &eb) == HC_OK && cut == 2);
    snprintf(want, sizeof want, "%s%s", l1, l2);
    CHECK(file_is(path, want));
    /* only the torn line */
    put_file(path, all);
    CHECK(hc_metrics_cut(path, 3, &cut, &eb) == HC_OK && cut == 1);
    snprintf(want, sizeof want, "%s%s%s", l1, l2, l3);
    CHECK(file_is(path, want));
    /* nothing to cut: untouched */
    CHECK(hc_metrics_cut(path, 3, &cut, &eb) == HC_OK && cut == 0 && file_is(path, want));
    /* step 0 (a resume that starts fresh) keeps nothing of this run's steps; a non-metrics line
     * before them stays */
    snprintf(all, sizeof all, "not json\n%s%s", l1, l2);
    put_file(path, all);
    CHECK(hc_metrics_cut(path, 0, &cut, &eb) == HC_OK && cut == 2 && file_is(path, "not json\n"));
    /* the first line beyond the step cuts, even when an earlier step follows it */
    snprintf(all, sizeof all, "%s%s%s%s", l1, l3, l2, l3);
    put_file(path, all);
    CHECK(hc_metrics_cut(path, 2, &cut, &eb) == HC_OK && cut == 3 && file_is(path, l1));
    unlink(path);
    /* a missing file and a character device are left alone */
    CHECK(hc_metrics_cut(path, 1, &cut, &eb) == HC_OK && cut == 0);
    CHECK(hc_metrics_cut("/dev/null", 1, &cut, &eb) == HC_OK && cut == 0);
    /* a directory in the path is an error naming the file */
    CHECK(hc_metrics_cut("/etc/passwd/x", 1, &cut, &eb) == HC_ERR_IO && strstr(eb.msg, "/etc/passwd/x"));
}

int main(void) {
    test_metrics();
    test_format();
    test_cut();
    return hc_test_finish("test_train_progress");
}
