/*
 * LD_PRELOAD counter of heap allocations: prints "mallocs: N" to stderr at exit.
 * Used to show that decoding allocates nothing per packet: the count must not grow
 * with the number of frames. Build: cc -O2 -shared -fPIC malloc_count.c -o malloc_count.so -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static unsigned long count;
static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static int (*real_posix_memalign)(void **, size_t, size_t);
static char boot[4096];
static size_t boot_used;

static void init(void)
{
	real_malloc = dlsym(RTLD_NEXT, "malloc");
	real_calloc = dlsym(RTLD_NEXT, "calloc");
	real_realloc = dlsym(RTLD_NEXT, "realloc");
	real_posix_memalign = dlsym(RTLD_NEXT, "posix_memalign");
}

void *malloc(size_t n)
{
	if (!real_malloc) init();
	__atomic_add_fetch(&count, 1, __ATOMIC_RELAXED);
	return real_malloc(n);
}

void *calloc(size_t a, size_t b)
{
	if (!real_calloc) {
		/* dlsym itself calls calloc: serve it from a static buffer. */
		size_t n = (a * b + 15) & ~(size_t)15;
		if (boot_used + n > sizeof(boot)) return NULL;
		void *p = boot + boot_used;
		boot_used += n;
		return p;
	}
	__atomic_add_fetch(&count, 1, __ATOMIC_RELAXED);
	return real_calloc(a, b);
}

void *realloc(void *p, size_t n)
{
	if (!real_realloc) init();
	__atomic_add_fetch(&count, 1, __ATOMIC_RELAXED);
	return real_realloc(p, n);
}

int posix_memalign(void **p, size_t a, size_t n)
{
	if (!real_posix_memalign) init();
	__atomic_add_fetch(&count, 1, __ATOMIC_RELAXED);
	return real_posix_memalign(p, a, n);
}

__attribute__((destructor)) static void report(void)
{
	char line[64];
	int len = snprintf(line, sizeof(line), "mallocs: %lu\n", count);
	write(2, line, len);
}
