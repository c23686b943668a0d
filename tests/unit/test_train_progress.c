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

int main(void) {
    test_metrics();
    test_format();
    return hc_test_finish("test_train_progress");
}
