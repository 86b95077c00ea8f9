/*
 * QEMU TCG plugin: counts the guest instructions executed between two marker calls.
 *
 * Debian's qemu-user loads plugins but ships none, so micronet-export compiles this file on
 * first use against the qemu-plugin.h of the same QEMU release (no glib needed).
 *
 * The guest marks its measured loop with getpid() called with extra arguments (MARKER_MAGIC,
 * phase): the kernel ignores them, the plugin sees them. Phase 1 opens a window, phase 2 closes
 * it; the counts of every closed window are summed. Counting is inline (one add per
 * translation block, one per classified instruction), so the counts are exact and repeatable
 * as long as the guest runs one thread in the window.
 *
 * Arguments: outfile=PATH (key value lines written at exit).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <qemu-plugin.h>

#include "insn_classes.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define AARCH64_SYS_GETPID 172
#define MARKER_MAGIC 0x4D4E4554u /* "MNET" */
#define MARKER_OPEN 1
#define MARKER_CLOSE 2

/* counters[INSN_OTHER] counts every instruction, counters[k] the instructions of class k. */
static uint64_t counters[INSN_CLASSES];
static uint64_t opened_at[INSN_CLASSES];
static uint64_t window[INSN_CLASSES];
static uint64_t windows_closed;
static int window_open;
static char outfile[4096];

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &counters[INSN_OTHER], n);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint32_t word;
        if (qemu_plugin_insn_size(insn) != sizeof(word)) {
            continue;
        }
        memcpy(&word, qemu_plugin_insn_data(insn), sizeof(word));
        enum insn_class klass = classify_insn(word);
        if (klass != INSN_OTHER) {
            qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &counters[klass], 1);
        }
    }
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1, uint64_t a2,
                       uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8)
{
    if (num != AARCH64_SYS_GETPID || a1 != MARKER_MAGIC) {
        return;
    }
    if (a2 == MARKER_OPEN && !window_open) {
        memcpy(opened_at, counters, sizeof(counters));
        window_open = 1;
    } else if (a2 == MARKER_CLOSE && window_open) {
        for (int k = 0; k < INSN_CLASSES; k++) {
            window[k] += counters[k] - opened_at[k];
        }
        windows_closed++;
        window_open = 0;
    }
}

static void on_exit(qemu_plugin_id_t id, void *unused)
{
    FILE *out = outfile[0] ? fopen(outfile, "w") : stderr;
    if (out == NULL) {
        return;
    }
    fprintf(out, "format micronet-insn-count 1\n");
    fprintf(out, "total.insns %llu\n", (unsigned long long)counters[INSN_OTHER]);
    fprintf(out, "window.closed %llu\n", (unsigned long long)windows_closed);
    for (int k = 0; k < INSN_CLASSES; k++) {
        fprintf(out, "window.%s %llu\n", insn_class_names[k], (unsigned long long)window[k]);
    }
    if (out != stderr) {
        fclose(out);
    }
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "outfile=", 8) == 0) {
            snprintf(outfile, sizeof(outfile), "%s", argv[i] + 8);
        } else {
            fprintf(stderr, "insn_count: unknown argument %s\n", argv[i]);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, on_exit, NULL);
    return 0;
}
