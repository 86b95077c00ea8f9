/*
 * Which AArch64 instructions the counting plugin tells apart, by their 32-bit encoding.
 *
 * Kept free of QEMU headers so that a plain C driver (tests/test_emulate.py) can check every
 * class against encodings produced by an assembler. Masks keep the fixed opcode bits and drop
 * the register fields, Q (64/128-bit), U (signed/unsigned) where both forms count alike, and
 * the element index bits.
 */
#ifndef MICRONET_INSN_CLASSES_H
#define MICRONET_INSN_CLASSES_H

#include <stdint.h>

enum insn_class {
    INSN_OTHER = 0, /* unclassified; the plugin's counter 0 counts every instruction */
    INSN_DOT,      /* SDOT / UDOT (FEAT_DotProd): 16 int8 multiply-adds into 4 int32 lanes */
    INSN_I8MM,     /* SMMLA / UMMLA / USMMLA / USDOT / SUDOT (FEAT_I8MM) */
    INSN_FMLA,     /* FMLA vector and by element, single and double precision */
    INSN_INT_MUL,  /* SMULL / UMULL / SMLAL / UMLAL (+2): the int8 path of cores without SDOT */
    INSN_CLASSES
};

static const char *const insn_class_names[INSN_CLASSES] = {
    "insns", "dot", "i8mm", "fmla", "int_mul",
};

struct insn_pattern {
    uint32_t mask;
    uint32_t value;
    enum insn_class klass;
};

static const struct insn_pattern insn_patterns[] = {
    {0x9FE0FC00u, 0x0E809400u, INSN_DOT},     /* SDOT/UDOT (vector) */
    {0x9FC0F400u, 0x0F80E000u, INSN_DOT},     /* SDOT/UDOT (by element) */
    {0xDFE0FC00u, 0x4E80A400u, INSN_I8MM},    /* SMMLA/UMMLA */
    {0xFFE0FC00u, 0x4E80AC00u, INSN_I8MM},    /* USMMLA */
    {0xBFE0FC00u, 0x0E809C00u, INSN_I8MM},    /* USDOT (vector) */
    {0xBFC0F400u, 0x0F80F000u, INSN_I8MM},    /* USDOT (by element) */
    {0xBFC0F400u, 0x0F00F000u, INSN_I8MM},    /* SUDOT (by element) */
    {0xBFA0FC00u, 0x0E20CC00u, INSN_FMLA},    /* FMLA (vector, single/double) */
    {0xBF80F400u, 0x0F801000u, INSN_FMLA},    /* FMLA (by element, single/double) */
    {0x9F20FC00u, 0x0E208000u, INSN_INT_MUL}, /* SMLAL/UMLAL{2} */
    {0x9F20FC00u, 0x0E20C000u, INSN_INT_MUL}, /* SMULL/UMULL{2} */
};

static inline enum insn_class classify_insn(uint32_t word)
{
    for (unsigned i = 0; i < sizeof(insn_patterns) / sizeof(insn_patterns[0]); i++) {
        if ((word & insn_patterns[i].mask) == insn_patterns[i].value) {
            return insn_patterns[i].klass;
        }
    }
    return INSN_OTHER;
}

#endif
