#include "scheduler/matcher.h"
#include "gtest/gtest.h"
TEST(Matcher, Builds) { suanli::scheduler::Matcher m; }
